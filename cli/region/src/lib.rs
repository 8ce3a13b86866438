//! `overstap-region`: what the parties of a region do from outside a node's daemon, as a
//! library, so the CLI, the demo, the end-to-end tests and the benchmarks drive the same code.
//!
//! Layout:
//! - [`authority`]: the regional authority (keys, CA, signed directory, admitting members).
//! - [`member`]: a member making its own keys and its requests to join or rotate.
//! - [`wallet`]: the student's own key and card; guardian keys.
//! - [`passport`]: filling in, signing and consenting, on the student's side.
//! - [`client`]: reaching a node's local API.
//! - [`region`]: a whole region on one machine (authority, hub, nodes on `127.0.0.1:0`),
//!   re-exported here as [`Region`] and [`Org`].
//! - [`cast`]: the demo region's members and students.
//! - [`year`]: a larger region and a school year of traffic through it, on a moved clock.
#![forbid(unsafe_code)]

pub mod authority;
pub mod cast;
pub mod client;
pub mod member;
pub mod passport;
pub mod region;
pub mod wallet;
pub mod year;

pub use region::{Org, Region};
