//! `overstap authority`: the regional authority's keys, the region's TLS CA, the signed
//! directory, admitting and removing members, and coordinators' dashboard sessions.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use overstap_proto::directory::kind_name;
use overstap_proto::pb::{MemberKind, MembershipRequest, Signed};
use overstap_proto::sign::{Domain, decode_body};
use overstap_region::authority::Authority;
use overstap_region::client::explain;
use overstap_region::member;

use super::{Format, json};

#[derive(Subcommand)]
pub enum AuthorityCmd {
    /// Make the authority key, the region's TLS CA and an empty directory.
    Init {
        /// A new folder for the authority's key, the region's CA and the directory; keep it
        /// offline.
        #[arg(long)]
        dir: PathBuf,
        /// The region's name, in the directory and in every log checkpoint (e.g. ijssel-vecht).
        #[arg(long, default_value = "regio")]
        region: String,
    },
    /// Admit a member by the request it made with `overstap member init`: issue its TLS
    /// certificate and sign a new directory version. Nothing secret is written.
    Admit {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The member's request (membership-request.signed).
        #[arg(long)]
        request: PathBuf,
        /// The fingerprint the member read out by phone; asked for when not given.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Where to write the certificate, the CA and the authority's public key for the member
        /// (default: beside the request).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Hand the newest signed directory to a running hub.
    Publish {
        /// A folder with the authority's directory.signed and authority.pub: the authority's
        /// own folder, or a copy of those two public files carried from an offline machine.
        #[arg(long)]
        dir: PathBuf,
        /// The hub's address (https://host:port).
        #[arg(long)]
        hub_url: String,
        /// A member's own folder to connect with (its tls/ folder is used), such as the hub's.
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
    /// Accept a member's new keys, by the request it made with `overstap member rotate`
    /// (signed by its current key and the new one).
    Rotate {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The member's rotation request (rotation-request.signed).
        #[arg(long)]
        request: PathBuf,
    },
    /// End a coordinator's dashboard sessions before they run out (a lost laptop, a
    /// coordinator who left): every session issued until now, or the one of --token.
    EndSessions {
        /// The authority's folder (its key, the region's CA and the directory), as `authority init`
        /// made it.
        #[arg(long)]
        dir: PathBuf,
        /// The coordinator's org id.
        #[arg(long)]
        org: String,
        /// End only the session of this token.
        #[arg(long)]
        token: Option<String>,
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
            request,
            fingerprint,
            out,
        } => {
            let a = Authority::open(&dir)?;
            let signed = member::read_request(&request)?;
            let summary = request_summary(&signed)?;
            let heard = match fingerprint {
                Some(f) => f,
                None => {
                    use std::io::IsTerminal;
                    if !std::io::stdin().is_terminal() {
                        bail!(
                            "give the fingerprint the member read out with --fingerprint (nothing to ask it from here)"
                        );
                    }
                    eprintln!("{summary}");
                    eprint!("Type the fingerprint the member reads out to you: ");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line
                }
            };
            let out = out.unwrap_or_else(|| {
                request
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default()
            });
            a.admit_request(&signed, &heard, &out)?;
            println!(
                "{summary}\nAdmitted; directory version {}. Send tls/cert.pem, tls/ca.pem and authority.pub{} from {} to the member (nothing in it is secret).",
                a.directory()?.version(),
                if out.join("hub.toml").exists() || out.join("directory.signed").exists() {
                    ", and to the hub directory.signed"
                } else {
                    ""
                },
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
            let signed = Authority::published_directory(&dir)?;
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
                .publish_directory(signed)
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
        AuthorityCmd::Rotate { dir, request } => {
            let a = Authority::open(&dir)?;
            let signed = member::read_request(&request)?;
            a.rotate_request(&signed)?;
            println!(
                "The new keys are in directory version {}. Publish it; the member's node takes them in use without a restart.",
                a.directory()?.version()
            );
            Ok(())
        }
        AuthorityCmd::EndSessions { dir, org, token } => {
            let a = Authority::open(&dir)?;
            a.end_sessions(&org, token.as_deref())?;
            println!(
                "{} of {org} ended in directory version {}. Publish it (overstap authority publish); the hub refuses {} from then on.",
                if token.is_some() {
                    "That session"
                } else {
                    "Every dashboard session"
                },
                a.directory()?.version(),
                if token.is_some() { "it" } else { "them" }
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

/// What a request asks for, for the coordinator to read before comparing the fingerprint.
fn request_summary(signed: &Signed) -> anyhow::Result<String> {
    let r: MembershipRequest = decode_body(Domain::MembershipRequest, signed)
        .context("this is not a membership request")?;
    let kind = MemberKind::try_from(r.kind).unwrap_or(MemberKind::Unspecified);
    let mut out = format!(
        "{} asks to join as {}: {}.",
        r.org_id,
        kind_name(kind),
        r.display_name
    );
    if !r.hosts.is_empty() {
        out.push_str(&format!(" Host names: {}.", r.hosts.join(", ")));
    }
    out.push_str(&format!(
        "\nFingerprint of this request: {}",
        member::fingerprint(signed)
    ));
    Ok(out)
}
