//! The node's Prometheus metrics, served as OpenMetrics text on `/metrics` over plain HTTP on a
//! port of its own (bind it to an address only the monitoring can reach). Counters count since
//! the process started; gauges are read from the store at every scrape. Labels carry envelope
//! kinds only, never anything about a student.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

pub struct NodeMetrics {
    registry: Registry,
    sent: Family<Kind, Counter>,
    received: Family<Kind, Counter>,
    refused: Family<Kind, Counter>,
    pub outbox_waiting: Gauge,
    pub sync_lag_seconds: Gauge,
    pub hub_connected: Gauge,
    pub inbox_held: Gauge,
    pub log_alarm: Gauge,
    pub log_entries: Gauge,
    pub log_unproven: Gauge,
    /// Envelopes per commit when the inbox takes in a run of them (see `NodeCore::ingest_run`).
    pub inbox_commit: Histogram,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut family = |name: &str, help: &str| {
            let f = Family::<Kind, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        let sent = family(
            "overstap_node_envelopes_sent",
            "Envelopes the hub accepted from this node, by kind",
        );
        let received = family(
            "overstap_node_envelopes_received",
            "Envelopes this node took in from its mailbox, by kind",
        );
        let refused = family(
            "overstap_node_envelopes_refused",
            "Envelopes the hub refused for good, by kind",
        );
        let inbox_commit = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);
        registry.register(
            "overstap_node_inbox_commit_envelopes",
            "Envelopes taken in from the mailbox per commit (more when many wait)",
            inbox_commit.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        NodeMetrics {
            inbox_commit,
            outbox_waiting: gauge(
                "overstap_node_outbox_waiting",
                "Envelopes in the outbox not yet accepted by the hub",
            ),
            sync_lag_seconds: gauge(
                "overstap_node_sync_lag_seconds",
                "Age of the oldest envelope that is due but not yet accepted by the hub",
            ),
            hub_connected: gauge(
                "overstap_node_hub_connected",
                "1 while the node's mailbox subscription to the hub is up",
            ),
            inbox_held: gauge(
                "overstap_node_inbox_held",
                "Envelopes that arrived ahead of a gap and wait for it to fill",
            ),
            log_alarm: gauge(
                "overstap_node_log_alarm",
                "1 when the hub showed a log that does not add up; sending has stopped",
            ),
            log_entries: gauge(
                "overstap_node_log_entries",
                "Entries in the newest checkpoint this node verified",
            ),
            log_unproven: gauge(
                "overstap_node_log_unproven",
                "Envelopes of this node not yet proven to be in the hub's log",
            ),
            registry,
            sent,
            received,
            refused,
        }
    }
}

impl NodeMetrics {
    fn count(family: &Family<Kind, Counter>, kind: i32) {
        family
            .get_or_create(&Kind {
                kind: overstap_proto::envelope::kind_name(kind).into(),
            })
            .inc();
    }

    pub fn sent(&self, kind: i32) {
        Self::count(&self.sent, kind);
    }

    pub fn received(&self, kind: i32) {
        Self::count(&self.received, kind);
    }

    pub fn refused(&self, kind: i32) {
        Self::count(&self.refused, kind);
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
