//! `overstap-bench`: the load runs behind `overstap bench`. Each reports its figures as a
//! ratio to a baseline measured in the same run, since the machines are shared and noisy.
//!
//! Layout:
//! - [`hub`]: envelopes through the hub from many senders, against a no-op tonic service on
//!   the same machine and, where one runs, NATS JetStream ([`nats`]).
//! - [`subscribers`]: many members subscribed at once, the hub's fan-out.
//! - [`handover`]: a whole handover — a cohort sealed, pushed, taken in — and its latency.
//! - [`pull`]: recipients pulling, beside the school pushing, and a pull's latency.
//! - [`log`]: the Merkle log's appends and proofs.
#![forbid(unsafe_code)]

pub mod handover;
pub mod hub;
pub mod log;
pub mod nats;
pub mod pull;
pub mod subscribers;
