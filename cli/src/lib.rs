//! The `overstap` command line, as a library so the demo and the end-to-end tests drive the
//! same code a person does.
//!
//! Layout:
//! - [`authority`]: the regional authority (keys, CA, signed directory, admitting members).
//! - [`wallet`]: the student's own key and card; guardian keys.
//! - [`passport`]: filling in, signing and consenting, on the student's side.
//! - [`client`]: reaching a node's local API.
//! - [`render`], [`render_json`]: output for people and for programs.
//! - [`region`]: a whole region in one process (the demo and the tests use it).
//! - [`demo`]: the story of a warm handover, checked step by step.
//! - [`audit`]: rebuilding the hub's log from its entries and checking it.
//! - [`commands`]: argument parsing and dispatch.
#![forbid(unsafe_code)]

pub mod audit;
pub mod authority;
pub mod bench;
pub mod bench_handover;
pub mod bench_hub;
pub mod bench_nats;
pub mod bench_subscribers;
pub mod client;
pub mod commands;
pub mod demo;
pub mod passport;
pub mod region;
pub mod render;
pub mod render_json;
pub mod stats;
pub mod wallet;
