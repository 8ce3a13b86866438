//! Mailboxes: `Subscribe` streams a recipient's waiting envelopes and wakes on new ones (also
//! on those another hub process sharing the store took in), `Ack` takes picked-up envelopes
//! out, and `recount_mailboxes` sets the quota's per-recipient counts from the store again.

use std::collections::HashMap;
use std::pin::Pin;

use overstap_proto::pb::{AckRequest, AckResponse, Delivery, Envelope, Signed, SubscribeRequest};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{HubError, HubService};
use crate::store::HubStore;

impl<S: HubStore> HubService<S> {
    /// Wakes the subscribers of envelopes that other hub processes put in a mailbox.
    pub fn watch_arrivals(&self, mut arrivals: tokio::sync::mpsc::Receiver<(String, u64)>) {
        let svc = self.clone();
        let mut shutdown = self.state.shutdown.clone();
        tokio::spawn(async move {
            loop {
                // Ends with the hub, so that nothing keeps its store (and the sequencer's lock
                // with it) alive after it stopped.
                let (org, seq) = tokio::select! {
                    a = arrivals.recv() => match a {
                        Some(a) => a,
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                };
                if org.is_empty() {
                    let signals: Vec<_> = svc
                        .state
                        .mailboxes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    for s in signals {
                        s.send_modify(|_| {});
                    }
                } else {
                    svc.state.mailbox_signal(&org).send_if_modified(|v| {
                        let newer = seq > *v;
                        *v = (*v).max(seq);
                        newer
                    });
                }
            }
        });
    }

    /// Sets the mailbox counts behind the quota from the store again, so an ack cancelled after
    /// its commit cannot leave a recipient counted fuller than it is for long.
    pub async fn recount_mailboxes(&self) -> Result<(), HubError> {
        let depths: HashMap<String, u64> = self
            .state
            .store
            .mailbox_depths()
            .await?
            .into_iter()
            .collect();
        self.state.waiting.reset(depths);
        Ok(())
    }

    pub(super) async fn do_subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<DeliveryStream>, Status> {
        let org = self.caller(&request).map_err(|e| self.refuse(e))?.org_id;
        let cap = u64::from(self.state.limits.subscriptions_per_member);
        if let Err(open) = self.state.subscriptions.try_add(&org, cap) {
            return Err(self.refuse(HubError::Exhausted {
                reason: "too_many_subscriptions",
                detail: format!(
                    "{org} already has {open} subscriptions open; close one before opening another"
                ),
                retry_after: None,
            }));
        }
        let mut cursor = request.into_inner().after_seq;
        let svc = self.clone();
        let (tx, rx) = mpsc::channel::<Result<Delivery, Status>>(32);
        tokio::spawn(async move {
            // Subscribing to the signal before reading the mailbox means no arrival between
            // the read and the wait is missed.
            let mut signal = svc.state.mailbox_signal(&org).subscribe();
            let mut shutdown = svc.state.shutdown.clone();
            let _counted = Subscribed::new(&svc.state.metrics.subscribers);
            let _slot = Slot(svc.clone(), org.clone());
            tracing::info!(%org, cursor, "subscriber connected");
            loop {
                let batch = match svc.state.store.mailbox(&org, cursor, 64).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(HubError::from(e).into())).await;
                        return;
                    }
                };
                let full = batch.len() == 64;
                for entry in batch {
                    cursor = entry.seq;
                    let delivery = match (
                        Envelope::decode(entry.envelope.as_slice()),
                        Signed::decode(entry.receipt.as_slice()),
                    ) {
                        (Ok(envelope), Ok(receipt)) => Delivery {
                            seq: entry.seq,
                            envelope: Some(envelope),
                            receipt: Some(receipt),
                        },
                        _ => {
                            tracing::error!(seq = entry.seq, "stored envelope does not decode");
                            continue;
                        }
                    };
                    if tx.send(Ok(delivery)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = signal.changed() => if changed.is_err() { return },
                    _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    pub(super) async fn do_ack(
        &self,
        request: Request<AckRequest>,
    ) -> Result<Response<AckResponse>, Status> {
        let org = self.caller(&request).map_err(|e| self.refuse(e))?.org_id;
        let ids = request.into_inner().envelope_ids;
        if ids.len() > 10_000 {
            return Err(
                HubError::Invalid(format!("at most 10000 ids per ack, got {}", ids.len())).into(),
            );
        }
        let at = self.state.now();
        let accepted_at = self
            .state
            .store
            .ack(&org, &ids, at)
            .await
            .map_err(|e| self.refuse(e.into()))?;
        self.state.waiting.sub(&org, accepted_at.len() as u64);
        for received in &accepted_at {
            self.state
                .metrics
                .send_to_ack
                .observe((at - received).max(0) as f64);
        }
        Ok(Response::new(AckResponse {
            acked: accepted_at.len() as u32,
        }))
    }
}

/// One of a member's subscriptions, given back when the stream ends.
struct Slot<S>(HubService<S>, String);

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        self.0.state.subscriptions.sub(&self.1, 1);
    }
}

/// Counts an open subscription for as long as it lives.
struct Subscribed(prometheus_client::metrics::gauge::Gauge);

impl Subscribed {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Subscribed(gauge.clone())
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(super) type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery, Status>> + Send>>;
