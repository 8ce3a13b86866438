//! The `overstap` command line, as a library so the demo and the end-to-end tests drive the
//! same code a person does.
//!
//! Layout:
//! - [`commands`]: argument parsing and dispatch.
//! - [`demo`]: the story of a warm handover, checked step by step.
//! - [`demo_year`]: a school year of traffic in a larger region, for the dashboard.
//! - [`audit`]: rebuilding the hub's log from its entries and checking it.
//! - [`stats`]: the coordinator's figures from the hub.
//! - [`health`]: `overstap health`, for container engines and systemd.
//! - [`render`]: output for people; [`render_data`]: JSON and CSV, for programs.
//!
//! What the parties do (the authority, a student's wallet and documents, the node API client,
//! a whole region on one machine) lives in `overstap-region`; the load runs behind
//! `overstap bench` in `overstap-bench`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod commands;
pub mod demo;
pub mod demo_year;
pub mod health;
pub mod render;
pub mod render_data;
pub mod stats;
