//! `overstap authority`: the regional authority's keys, the region's TLS CA, the signed
//! directory, admitting and removing members, and coordinators' dashboard sessions.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use overstap_proto::directory::{kind_name, parse_kind};
use overstap_region::authority::{Admission, Authority};
use overstap_region::client::explain;

use super::{Format, json};

#[derive(Subcommand)]
pub enum AuthorityCmd {
    /// Make the authority key, the region's TLS CA and an empty directory.
    Init {
        /// A new folder for the authority's key, the region's CA and the directory; keep it
        /// offline.
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The region's name, in the directory and in every log checkpoint (e.g. ijssel-vecht).
        #[arg(long, default_value = "regio")]
        region: String,
    },
    /// Admit a member: issue its credentials and sign a new directory version.
    Admit {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
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
        /// Where to write the member's credentials (default DIR/members/ORG).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The hub's address, written into a node's node.toml.
        #[arg(long, default_value = "https://127.0.0.1:7443")]
        hub_url: String,
        /// The hub's name in its certificate (one of its --host names), written into node.toml.
        #[arg(long, default_value = "localhost")]
        hub_name: String,
        /// Where the hub listens, written into hub.toml.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Host names and addresses for the hub's certificate.
        #[arg(long = "host", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Hand the newest signed directory to a running hub.
    Publish {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The hub's address (https://host:port).
        #[arg(long)]
        hub_url: String,
        /// A member's credentials folder to connect with (its tls/ folder is used).
        #[arg(long)]
        via: PathBuf,
        /// The hub's name in its certificate.
        #[arg(long, default_value = "localhost")]
        hub_name: String,
    },
    /// Remove a member (it left the region, or its keys were stolen).
    Remove {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The member's org id.
        #[arg(long)]
        org: String,
    },
    /// Give a member new keys; writes them into its credentials folder.
    Rotate {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The member's org id.
        #[arg(long)]
        org: String,
        /// The member's credentials folder (the one `admit --out` wrote).
        #[arg(long)]
        member_dir: PathBuf,
    },
    /// Show the directory.
    Show {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Issue a coordinator a session for the hub's web dashboard (prints the token).
    DashboardToken {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The coordinator's org id.
        #[arg(long)]
        org: String,
        /// How long the session lasts (1 to 168 hours).
        #[arg(long, default_value_t = 12)]
        hours: u32,
    },
}

pub(super) async fn authority(cmd: AuthorityCmd) -> anyhow::Result<()> {
    match cmd {
        AuthorityCmd::Init { dir, region } => {
            let a = Authority::init(&dir, &region)?;
            println!(
                "Authority for region {region} created in {}.\nAuthority public key (give it to every node): {}",
                dir.display(),
                hex::encode(a.key.verifying_key().to_bytes())
            );
            Ok(())
        }
        AuthorityCmd::Admit {
            dir,
            org,
            kind,
            name,
            out,
            hub_url,
            hub_name,
            listen,
            hosts,
        } => {
            let a = Authority::open(&dir)?;
            let kind = parse_kind(&kind)?;
            let out = out.unwrap_or_else(|| dir.join("members").join(&org));
            a.admit(&Admission {
                org_id: org.clone(),
                kind,
                name,
                hosts,
                hub_url,
                hub_name,
                listen,
                out: out.clone(),
            })?;
            let v = a.directory()?.version();
            println!(
                "{org} admitted as {}; credentials in {}; directory version {v}.",
                kind_name(kind),
                out.display()
            );
            println!(
                "Hand the new directory to the hub with: overstap authority publish --dir {} ...",
                dir.display()
            );
            Ok(())
        }
        AuthorityCmd::Publish {
            dir,
            hub_url,
            via,
            hub_name,
        } => {
            let a = Authority::open(&dir)?;
            let read = |f: &str| {
                std::fs::read(via.join("tls").join(f))
                    .with_context(|| format!("reading {}/tls/{f}", via.display()))
            };
            let link = overstap_node::sync::HubLink {
                url: hub_url,
                server_name: hub_name,
                ca_pem: read("ca.pem")?,
                cert_pem: read("cert.pem")?,
                key_pem: read("key.pem")?,
            };
            let mut hub = overstap_proto::pb::hub_client::HubClient::new(link.channel()?);
            let v = hub
                .publish_directory(a.signed_directory()?)
                .await
                .map_err(explain)?
                .into_inner()
                .version;
            println!("The hub now serves directory version {v}.");
            Ok(())
        }
        AuthorityCmd::Remove { dir, org } => {
            let a = Authority::open(&dir)?;
            a.remove(&org)?;
            println!(
                "{org} is removed; directory version {}. Hand it to the hub with `overstap authority publish`.",
                a.directory()?.version()
            );
            Ok(())
        }
        AuthorityCmd::Rotate {
            dir,
            org,
            member_dir,
        } => {
            let a = Authority::open(&dir)?;
            a.rotate(&org, &member_dir)?;
            println!(
                "{org} has new keys in {}; directory version {}. Publish it; the node follows without a restart.",
                member_dir.display(),
                a.directory()?.version()
            );
            Ok(())
        }
        AuthorityCmd::DashboardToken { dir, org, hours } => {
            let token = Authority::open(&dir)?.dashboard_token(&org, hours)?;
            eprintln!(
                "A dashboard session for {org}, valid for {hours} hours. Open the hub's dashboard address with #token= and this token after it, or paste it on the sign-in page; keep it as secret as a password."
            );
            println!("{token}");
            Ok(())
        }
        AuthorityCmd::Show { dir, format } => {
            let d = Authority::open(&dir)?.directory()?.directory;
            match format {
                Format::Json => json(&serde_json::json!({
                    "region": d.region, "version": d.version,
                    "members": d.members.iter().map(|m| serde_json::json!({
                        "org_id": m.org_id, "kind": kind_name(m.kind()), "name": m.display_name,
                        "encryption_key_id": m.encryption_key_id,
                    })).collect::<Vec<_>>(),
                }))?,
                Format::Table => {
                    println!("Region {}, directory version {}:", d.region, d.version);
                    for m in &d.members {
                        println!(
                            "  {:<8} {:<13} {}",
                            m.org_id,
                            kind_name(m.kind()),
                            m.display_name
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
