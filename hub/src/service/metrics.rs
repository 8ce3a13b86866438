//! The metrics scrape: the counters as kept, with the gauges (mailbox depths, log size) read
//! fresh from the store and the log first.

use std::collections::HashMap;

use overstap_proto::pb::MemberKind;

use super::{HubError, HubService};
use crate::store::HubStore;

impl<S: HubStore> HubService<S> {
    /// The metrics as OpenMetrics text, with the gauges read fresh from the store.
    pub async fn metrics_text(&self) -> Result<String, HubError> {
        let metrics = &self.state.metrics;
        // Every member that receives envelopes has a depth, zero included; so does any
        // recipient with envelopes waiting.
        let mut depths: HashMap<String, u64> = HashMap::new();
        if let Ok(directory) = self.directory() {
            for m in &directory.directory.members {
                if !matches!(m.kind(), MemberKind::Hub | MemberKind::Coordinator) {
                    depths.insert(m.org_id.clone(), 0);
                }
            }
        }
        depths.extend(self.state.store.mailbox_depths().await?);
        for (recipient, depth) in depths {
            metrics
                .mailbox_depth
                .get_or_create(&crate::metrics::Recipient { recipient })
                .set(depth as i64);
        }
        metrics
            .log_size
            .set(self.state.log.lock().await.size() as i64);
        Ok(metrics.encode())
    }
}
