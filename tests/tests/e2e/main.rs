//! End-to-end tests: a whole region (authority, hub, four nodes) in this process, on
//! 127.0.0.1:0, with real TLS, real signatures and HPKE, and SQLite files in a temp folder.
//! One test binary with modules compiles faster than many.

mod abuse;
mod bad_input;
mod bad_input_node;
mod benches;
mod dashboard;
mod dashboard_year;
mod delivery;
mod deploy;
mod handover;
mod joining;
mod keys;
mod lifecycle;
mod log;
mod model;
mod monitoring;
mod processes;
mod pull;
mod threats;
mod web;
mod web_doors;
mod web_family;
mod web_inbox;
mod web_oidc;
mod web_parents;
mod web_story;
mod web_tls;
