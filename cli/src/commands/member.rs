//! `overstap member`: a school, college, municipality, coordinator or hub makes its own keys on
//! its own machine and asks the authority to admit it (or to accept new keys). No private key
//! leaves the member's folder; what goes to the authority is a request, and what comes back
//! is a certificate and the directory.

use std::path::PathBuf;

use clap::Subcommand;
use overstap_proto::directory::{kind_name, parse_kind};
use overstap_region::member::{self, Admission, JOIN_REQUEST, ROTATION_REQUEST};

#[derive(Subcommand)]
pub enum MemberCmd {
    /// Make this member's keys here and the request to join the region.
    Init {
        /// A new folder for this member's keys and settings; they stay on this machine.
        #[arg(long)]
        dir: PathBuf,
        /// BRIN code (25LP), municipality code (GM0193), or the hub's id.
        #[arg(long)]
        org: String,
        /// school, mbo, municipality, coordinator or hub.
        #[arg(long)]
        kind: String,
        /// The member's name as people know it (e.g. "Vmbo De Brug").
        #[arg(long)]
        name: String,
        /// The hub's address, written into a node's node.toml.
        #[arg(long, default_value = "https://127.0.0.1:7443")]
        hub_url: String,
        /// The hub's name in its certificate (one of its --host names), written into node.toml.
        #[arg(long, default_value = "localhost")]
        hub_name: String,
        /// The hub only: where it listens, written into hub.toml.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// The hub only: host names and addresses for its certificate.
        #[arg(long = "host", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Make this member's next signing and encryption keys and the request to use them.
    Rotate {
        /// This member's folder, as `member init` made it.
        #[arg(long)]
        dir: PathBuf,
        /// This member's org id.
        #[arg(long)]
        org: String,
        /// Make next keys again although earlier ones wait (only when the authority did not
        /// accept that earlier request).
        #[arg(long)]
        again: bool,
    },
}

pub(super) fn member(cmd: MemberCmd) -> anyhow::Result<()> {
    match cmd {
        MemberCmd::Init {
            dir,
            org,
            kind,
            name,
            hub_url,
            hub_name,
            listen,
            hosts,
        } => {
            let kind = parse_kind(&kind)?;
            let request = member::init(&Admission {
                org_id: org.clone(),
                kind,
                name,
                hosts,
                hub_url,
                hub_name,
                listen,
                out: dir.clone(),
            })?;
            println!(
                "The keys of {org} ({}) are made in {}; they stay on this machine.",
                kind_name(kind),
                dir.display()
            );
            println!(
                "Send {} to the region's coordinator, and read this fingerprint out to them by phone:\n\n    {}\n",
                dir.join(JOIN_REQUEST).display(),
                member::fingerprint(&request)
            );
            println!(
                "The coordinator sends back tls/cert.pem, tls/ca.pem and authority.pub; put them in {}.",
                dir.display()
            );
            Ok(())
        }
        MemberCmd::Rotate { dir, org, again } => {
            member::rotate(&dir, &org, again)?;
            println!(
                "New keys for {org} are made beside the current ones in {}/keys (*.next).",
                dir.display()
            );
            println!(
                "Send {} to the region's coordinator. The node goes on with its current keys until the hub serves a directory that names the new ones, then takes them in use by itself.",
                dir.join(ROTATION_REQUEST).display()
            );
            Ok(())
        }
    }
}
