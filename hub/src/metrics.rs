//! The hub's Prometheus metrics, served as OpenMetrics text on `/metrics` over plain HTTP on a
//! port of its own (bind it to an address only the monitoring can reach). Counters count since
//! the process started; gauges are read from the store at every scrape. Labels carry envelope
//! kinds, reasons and org ids, never anything about a student.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Routed {
    pub kind: String,
    /// `accepted`, `duplicate` or `refused`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Recipient {
    pub recipient: String,
}

/// Seconds from a `Send` to the recipient's `Ack`: from a node that is online (well under a
/// second) to one that picks up after a week.
const ACK_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3_600.0, 21_600.0, 86_400.0, 259_200.0, 604_800.0,
];

/// Envelopes per group commit: 1 on a quiet hub, up to 256 under load.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

pub struct HubMetrics {
    registry: Registry,
    pub routed: Family<Routed, Counter>,
    pub rejections: Family<Reason, Counter>,
    pub mailbox_depth: Family<Recipient, Gauge>,
    pub send_to_ack: Histogram,
    pub log_size: Gauge,
    pub subscribers: Gauge,
    pub commit_batch: Histogram,
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let routed = Family::<Routed, Counter>::default();
        registry.register(
            "overstap_hub_envelopes",
            "Envelopes offered to the hub, by kind and outcome",
            routed.clone(),
        );
        let rejections = Family::<Reason, Counter>::default();
        registry.register(
            "overstap_hub_rejections",
            "Calls the hub refused, by reason",
            rejections.clone(),
        );
        let mailbox_depth = Family::<Recipient, Gauge>::default();
        registry.register(
            "overstap_hub_mailbox_depth",
            "Envelopes waiting in a recipient's mailbox, not yet acknowledged",
            mailbox_depth.clone(),
        );
        let send_to_ack = Histogram::new(ACK_BUCKETS);
        registry.register(
            "overstap_hub_send_to_ack_seconds",
            "Time from the hub accepting an envelope to its recipient acknowledging it",
            send_to_ack.clone(),
        );
        let log_size = Gauge::default();
        registry.register(
            "overstap_hub_log_entries",
            "Entries in the newest signed checkpoint of the exchange log",
            log_size.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "overstap_hub_subscribers",
            "Open mailbox subscriptions",
            subscribers.clone(),
        );
        let commit_batch = Histogram::new(BATCH_BUCKETS);
        registry.register(
            "overstap_hub_commit_batch_envelopes",
            "Envelopes stored per commit (group commit: more under load)",
            commit_batch.clone(),
        );
        HubMetrics {
            registry,
            routed,
            rejections,
            mailbox_depth,
            send_to_ack,
            log_size,
            subscribers,
            commit_batch,
        }
    }
}

impl HubMetrics {
    pub fn commit_batch(&self, envelopes: usize) {
        self.commit_batch.observe(envelopes as f64);
    }

    pub fn routed(&self, kind: &str, outcome: &str) {
        self.routed
            .get_or_create(&Routed {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.rejections
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .inc();
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
