//! The `overstap` command line: parsing and dispatch. Each command is a few lines over the
//! library (authority, passport, wallet, client, render, demo).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use overstap_proto::directory::{kind_name, parse_kind};
use overstap_proto::pb::{
    GetStudentRequest, HandoversRequest, InboxRequest, LogStatusRequest, Manifest,
    NodeStatusRequest, OutboxRequest, RegisterStudentRequest, ReplaceStudentKeyRequest,
    SendPassportRequest, SendPassportsRequest, SetStatusRequest, ShowPassportRequest, TrailRequest,
};
use overstap_proto::sign::{Domain, decode_body};

use crate::authority::{Admission, Authority};
use crate::client::{Api, connect, connect_dir, explain};
use crate::passport::{
    GrantRequest, draft_from_answers, fill_interactive, make_grant, make_revocation, parse_date,
    revoke, sign_passport, upload_grant,
};
use crate::wallet::{Wallet, load_key, new_guardian_key};
use crate::{demo, render};

#[derive(Parser)]
#[command(
    name = "overstap",
    version,
    about = "Overstap: warm handovers of the Paspoort voor Succes between schools, mbo colleges and municipalities"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct NodeOpts {
    /// The node's folder (holds api.url and api.token).
    #[arg(long, env = "OVERSTAP_NODE_DIR", global = true)]
    pub node_dir: Option<PathBuf>,
    /// The node's local API address, instead of --node-dir.
    #[arg(long, env = "OVERSTAP_NODE_URL", global = true)]
    pub node_url: Option<String>,
    /// The node's API token file, with --node-url.
    #[arg(long, env = "OVERSTAP_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl NodeOpts {
    async fn api(&self) -> anyhow::Result<Api> {
        match (&self.node_dir, &self.node_url, &self.token_file) {
            (_, Some(url), Some(token)) => {
                connect(
                    url,
                    &std::fs::read_to_string(token)
                        .with_context(|| format!("reading {}", token.display()))?,
                )
                .await
            }
            (Some(dir), _, _) => connect_dir(dir).await,
            _ => bail!(
                "say which node to use: --node-dir DIR (or OVERSTAP_NODE_DIR), or --node-url URL with --token-file FILE"
            ),
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// The regional authority: keys, the region's TLS CA and the signed directory.
    #[command(subcommand)]
    Authority(AuthorityCmd),
    /// A guardian's key, for students under 16.
    #[command(subcommand)]
    Guardian(GuardianCmd),
    /// Students (run on the student's side; the home node issues the card).
    #[command(subcommand)]
    Student(StudentCmd),
    /// Fill in and sign the Paspoort voor Succes.
    #[command(subcommand)]
    Passport(PassportCmd),
    /// Consent: who may read which sections, for what, until when.
    #[command(subcommand)]
    Consent(ConsentCmd),
    /// Push a student's passport under a grant (at transition time); name --grant once for each
    /// student of a class to push them all in one go.
    Send {
        #[arg(long, required = true)]
        grant: Vec<String>,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Received passports; --show one (the view is logged with your name).
    Inbox {
        #[arg(long)]
        show: Option<String>,
        /// Your name or staff id, logged with every view.
        #[arg(long, env = "OVERSTAP_STAFF")]
        staff: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// The school's handovers: to whom, consent state, the recipient's status, age, views.
    Handovers {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Set the status of a received passport (reported back to the school).
    Status {
        #[arg(long)]
        grant: String,
        /// ontvangen, gelezen, "intake gepland", gestart or "niet gestart"
        #[arg(long)]
        set: String,
        #[arg(long, env = "OVERSTAP_STAFF")]
        staff: String,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// What this node sent, and what became of it.
    Outbox {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// The node's state: directory version, outbox, inbox, hub connection.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The hub's verifiable log, as this node checks it.
    #[command(subcommand)]
    Log(LogCmd),
    /// The region's exchange in aggregate, for coordinators: per organisation pair, per kind
    /// of member over time, and who has envelopes waiting. Counts under 5 read "<5".
    Stats {
        #[arg(long, value_enum, default_value_t = crate::stats::ReportFormat::Table)]
        format: crate::stats::ReportFormat,
        /// From this date (YYYY-MM-DD) or this many days back (30d); a year when not given.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::stats::By::Pair)]
        by: crate::stats::By,
        /// The coordinator's node folder: its TLS identity is what the hub lets in.
        #[arg(long, env = "OVERSTAP_NODE_DIR")]
        node_dir: PathBuf,
    },
    /// Whether a hub or a node on this machine is up (for container health checks and
    /// probes): asks its gRPC health service; exits 0 when it serves, 1 when not.
    #[command(subcommand)]
    Health(HealthCmd),
    /// Measure what the verifiable log costs (proofs at scale, routing with the log on ÷ off).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run a whole region on this machine and tell the story of a warm handover.
    Demo {
        /// Keep the region's files here (default: a fresh temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the region running after the story, for the CLI to explore.
        #[arg(long)]
        serve: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum AuthorityCmd {
    /// Make the authority key, the region's TLS CA and an empty directory.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "regio")]
        region: String,
    },
    /// Admit a member: issue its credentials and sign a new directory version.
    Admit {
        #[arg(long)]
        dir: PathBuf,
        /// BRIN code (25LP), municipality code (GM0193), or the hub's id.
        #[arg(long)]
        org: String,
        /// school, mbo, municipality, coordinator or hub.
        #[arg(long)]
        kind: String,
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
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        hub_url: String,
        /// A member's credentials folder to connect with (its tls/ folder is used).
        #[arg(long)]
        via: PathBuf,
        #[arg(long, default_value = "localhost")]
        hub_name: String,
    },
    /// Remove a member (it left the region, or its keys were stolen).
    Remove {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        org: String,
    },
    /// Give a member new keys; writes them into its credentials folder.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        org: String,
        /// The member's credentials folder (the one `admit --out` wrote).
        #[arg(long)]
        member_dir: PathBuf,
    },
    /// Show the directory.
    Show {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Issue a coordinator a session for the hub's web dashboard (prints the token).
    DashboardToken {
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

#[derive(Subcommand)]
pub enum GuardianCmd {
    /// Make a guardian key (kept by the parent); prints the public key to register with.
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum StudentCmd {
    /// Make the student's key here and have the home node issue a pseudonym and card.
    New {
        /// Where to keep the student's wallet (key and card); it never leaves this device.
        #[arg(long)]
        wallet: PathBuf,
        /// YYYY-MM
        #[arg(long)]
        birth_month: String,
        /// A guardian's public key (hex), from `overstap guardian new`; needed under 16.
        #[arg(long = "guardian-pub")]
        guardian_pubs: Vec<String>,
        /// The mentor who checked the student in person.
        #[arg(long, env = "OVERSTAP_STAFF")]
        staff: String,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// The student lost their key (a phone gone, say). After checking the student in person
    /// again, the mentor has the home node issue a new card for the same pseudonym: a new key is
    /// made here, the lost one is retired, and consents given before stay in force.
    LostKey {
        /// The student's pseudonym, as on the old card (the school can look it up).
        #[arg(long)]
        pseudonym: String,
        /// Where to keep the new wallet (on the student's new device).
        #[arg(long)]
        wallet: PathBuf,
        /// When a guardian lost their key too: the whole new list of guardian keys (hex).
        #[arg(long = "guardian-pub")]
        guardian_pubs: Vec<String>,
        /// The mentor who checked the student in person.
        #[arg(long, env = "OVERSTAP_STAFF")]
        staff: String,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Where the passport went and who looked at it, each event with the hub's signed receipt.
    Trail {
        #[arg(long)]
        wallet: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
}

#[derive(Subcommand)]
pub enum PassportCmd {
    /// Answer the questions (or take them from --from FILE) and save a draft.
    Fill {
        #[arg(long, default_value = "pvs-mbo-v1")]
        set: String,
        #[arg(long)]
        out: PathBuf,
        /// A JSON answers file: {"section": {"question": "answer" or {"answer":..,"smiley":..}}}.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Sign the draft as the next passport version and store it at the home node.
    Sign {
        #[arg(long)]
        wallet: PathBuf,
        #[arg(long)]
        draft: PathBuf,
        /// The guardian's key file; needed when the student is under 16.
        #[arg(long)]
        guardian_key: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
}

#[derive(Subcommand)]
pub enum ConsentCmd {
    /// Consent to one organisation reading some sections, for a purpose, until a date.
    Grant {
        #[arg(long)]
        wallet: PathBuf,
        #[arg(long)]
        to: String,
        /// Comma-separated section ids, e.g. wie-ben-ik,wat-heb-ik-nodig
        #[arg(long, value_delimiter = ',')]
        sections: Vec<String>,
        /// intake, begeleiding, werk or nazorg
        #[arg(long)]
        purpose: String,
        /// End date (YYYY-MM-DD): the grant ends when that day begins (00:00 UTC).
        #[arg(long)]
        until: String,
        /// First day (YYYY-MM-DD); default now.
        #[arg(long)]
        from: Option<String>,
        /// Later passport versions follow this grant.
        #[arg(long)]
        live: bool,
        #[arg(long)]
        guardian_key: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Withdraw a consent: the recipient erases what it brought and sends a signed receipt.
    Revoke {
        #[arg(long)]
        wallet: PathBuf,
        #[arg(long)]
        grant: String,
        /// The guardian's key file; needed when the student is under 16.
        #[arg(long)]
        guardian_key: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// The hub's routing throughput (durable, mutual TLS) ÷ a no-op gRPC server with the same
    /// TLS, for 4 KiB and 100 KiB envelopes; with PostgreSQL, also SQLite ÷ PostgreSQL and one
    /// replica ÷ two; with NATS, hub ÷ JetStream storing the same envelopes.
    Hub {
        /// Envelopes routed per run.
        #[arg(long, default_value_t = 2_000)]
        envelopes: usize,
        /// Concurrent senders, each waiting for its receipt before it sends the next.
        #[arg(long, default_value_t = crate::bench_hub::SENDERS)]
        senders: usize,
        /// Runs of each kind; the best counts.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// A PostgreSQL server to run the hub on as well (a fresh database next to the one
        /// named), e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long, env = "OVERSTAP_TEST_POSTGRES")]
        postgres: Option<String>,
        /// A NATS server with JetStream (host:port, e.g. 127.0.0.1:4222) to store the same
        /// envelopes in, for hub ÷ JetStream.
        #[arg(long)]
        nats: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Whole handovers in one region (a school and five mbo colleges): the wall time of a
    /// cohort push, then the latency of single handovers at half that rate (p50, p99).
    Handover {
        /// Passports in the cohort push.
        #[arg(long, default_value_t = 1_000)]
        cohort: usize,
        /// Handovers timed one by one afterwards.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// Handovers per second while they are timed (default: half the cohort's rate), to
        /// compare latencies at one load across runs.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The hub's resident memory with every member of a large region subscribed and idle (the
    /// `overstap-hub` binary as a process of its own; build it first).
    Subscribers {
        /// Members admitted, each subscribing once on its own connection.
        #[arg(long, default_value_t = 2_500)]
        members: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// What the verifiable log costs: proofs at scale, routing with the log on ÷ off.
    Log {
        /// Entries in the in-memory log the proofs are measured on.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Envelopes routed per run (four runs: log on, off, on, off).
        #[arg(long, default_value_t = 2_000)]
        envelopes: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// The newest checkpoint this node verified, its proofs, and any alarm.
    Checkpoint {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Prove that an envelope this node sent or received is in the hub's log (hex id, as
    /// `overstap outbox` shows it).
    Prove {
        envelope: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Fetch every log entry from the hub, rebuild the tree, and check it against the
    /// checkpoint this node verified and the hub's newest one.
    Audit {
        /// The node's folder: its API, its settings and its TLS identity.
        #[arg(long, env = "OVERSTAP_NODE_DIR")]
        node_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum HealthCmd {
    /// The hub whose settings file this is, on 127.0.0.1 at its `listen` port, asked with the
    /// hub's own certificate (mutual TLS, as every caller).
    Hub {
        #[arg(long, default_value = "/etc/overstap/hub.toml")]
        config: PathBuf,
        /// The name the hub's certificate carries (it was admitted with it as a host).
        #[arg(long, default_value = "localhost")]
        name: String,
    },
    /// The node whose settings file this is, at its local API (`api_listen`).
    Node {
        #[arg(long, default_value = "/etc/overstap/node/node.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What making a new wallet starts with: a path that is free, the guardian keys given, a key
/// made here for the student, and the home node's API.
async fn new_wallet_start(
    wallet: &Path,
    guardian_pubs: &[String],
    node: &NodeOpts,
) -> anyhow::Result<(Vec<Vec<u8>>, ed25519_dalek::SigningKey, Api)> {
    if wallet.exists() {
        bail!(
            "{} already exists; choose another path for the new wallet",
            wallet.display()
        );
    }
    let guardians = hex_keys(guardian_pubs)?;
    let key = overstap_proto::sign::generate_signing_key();
    Ok((guardians, key, node.api().await?))
}

/// Guardian public keys given in hex on the command line.
fn hex_keys(hexes: &[String]) -> anyhow::Result<Vec<Vec<u8>>> {
    hexes
        .iter()
        .map(|h| hex::decode(h.trim()).with_context(|| format!("guardian key {h:?} is not hex")))
        .collect()
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Authority(cmd) => authority(cmd).await,
        Command::Guardian(GuardianCmd::New { out }) => {
            let key = new_guardian_key(&out)?;
            println!(
                "Guardian key written to {} (keep it safe; it never leaves the parent).",
                out.display()
            );
            println!(
                "Public key, to register with the school: {}",
                hex::encode(key.verifying_key().to_bytes())
            );
            Ok(())
        }
        Command::Student(StudentCmd::New {
            wallet,
            birth_month,
            guardian_pubs,
            staff,
            node,
        }) => {
            let (guardians, key, mut api) =
                new_wallet_start(&wallet, &guardian_pubs, &node).await?;
            let card = api
                .register_student(RegisterStudentRequest {
                    student_key: key.verifying_key().to_bytes().to_vec(),
                    birth_month,
                    guardian_keys: guardians,
                    staff_user: staff,
                })
                .await
                .map_err(explain)?
                .into_inner()
                .card
                .context("the node issued no card")?;
            let w = Wallet::new(key, card)?;
            w.save(&wallet)?;
            println!(
                "Welcome! Your pseudonym is {}. Your key stays in {}.",
                w.pseudonym,
                wallet.display()
            );
            Ok(())
        }
        Command::Passport(PassportCmd::Fill { set, out, from }) => {
            let draft = match from {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let answers = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not an answers file", path.display()))?;
                    draft_from_answers(&set, &answers)?
                }
                None => {
                    let qs = overstap_proto::questions::question_set(&set)?;
                    let stdin = std::io::stdin();
                    fill_interactive(&qs, &mut stdin.lock(), &mut std::io::stdout())?
                }
            };
            std::fs::write(&out, serde_json::to_string_pretty(&draft)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "Draft saved in {}. Read it once more, then sign it with: overstap passport sign --wallet YOUR-WALLET --draft {}",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Passport(PassportCmd::Sign {
            wallet,
            draft,
            guardian_key,
            node,
        }) => {
            let w = Wallet::load(&wallet)?;
            let text = std::fs::read_to_string(&draft)
                .with_context(|| format!("reading {}", draft.display()))?;
            let d = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a passport draft", draft.display()))?;
            let guardian = guardian_key
                .map(|p| load_key(&p, "guardian key"))
                .transpose()?;
            let mut api = node.api().await?;
            let v = sign_passport(&mut api, &w, &d, guardian.as_ref(), now()).await?;
            println!("Passport version {v} signed and stored at {}.", w.home_org);
            Ok(())
        }
        Command::Consent(ConsentCmd::Grant {
            wallet,
            to,
            sections,
            purpose,
            until,
            from,
            live,
            guardian_key,
            node,
        }) => {
            let w = Wallet::load(&wallet)?;
            let guardian = guardian_key
                .map(|p| load_key(&p, "guardian key"))
                .transpose()?;
            let mut api = node.api().await?;
            let current = api
                .get_student(GetStudentRequest {
                    pseudonym: w.pseudonym.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let Some(manifest) = current.manifest else {
                bail!(
                    "sign your passport first (overstap passport sign); a grant names its sections"
                );
            };
            let set = decode_body::<Manifest>(Domain::Manifest, &manifest)?.question_set;
            let req = GrantRequest {
                to,
                sections,
                purpose,
                not_before: from
                    .as_deref()
                    .map(parse_date)
                    .transpose()?
                    .unwrap_or_else(now),
                not_after: parse_date(&until)?,
                live,
            };
            let signed = make_grant(&w, &set, &req, guardian.as_ref(), now())?;
            let id = upload_grant(&mut api, signed).await?;
            println!(
                "Consent {id} given to {} for {} ({}), until {}.",
                req.to,
                req.purpose,
                req.sections.join(", "),
                until
            );
            println!("The school sends it with: overstap send --grant {id}");
            Ok(())
        }
        Command::Consent(ConsentCmd::Revoke {
            wallet,
            grant,
            guardian_key,
            node,
        }) => {
            let w = Wallet::load(&wallet)?;
            let guardian = guardian_key
                .map(|p| load_key(&p, "guardian key"))
                .transpose()?;
            let signed = make_revocation(&w, &grant, guardian.as_ref(), now())?;
            let mut api = node.api().await?;
            let id = revoke(&mut api, signed).await?;
            println!(
                "Consent {id} is withdrawn. The recipient is asked to erase what it received and to send a signed receipt."
            );
            println!(
                "Follow it with: overstap student trail --wallet {}",
                wallet.display()
            );
            Ok(())
        }
        Command::Student(StudentCmd::LostKey {
            pseudonym,
            wallet,
            guardian_pubs,
            staff,
            node,
        }) => {
            let (guardians, key, mut api) =
                new_wallet_start(&wallet, &guardian_pubs, &node).await?;
            let reply = api
                .replace_student_key(ReplaceStudentKeyRequest {
                    pseudonym,
                    new_student_key: key.verifying_key().to_bytes().to_vec(),
                    replace_guardians: !guardians.is_empty(),
                    guardian_keys: guardians,
                    staff_user: staff,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let card = reply.card.context("the node issued no card")?;
            let w = Wallet::new(key, card)?;
            let issued = w.card()?.issued_at;
            w.save(&wallet)?;
            println!(
                "Done. Your new key is in {}. The lost key no longer counts for anything signed \
                 after {}.",
                wallet.display(),
                overstap_proto::format_time(issued)
            );
            println!(
                "The {} consent(s) you gave before stay in force; you can withdraw them with the \
                 new key.",
                reply.grants_kept
            );
            Ok(())
        }
        Command::Student(StudentCmd::Trail {
            wallet,
            format,
            node,
        }) => {
            let w = Wallet::load(&wallet)?;
            let events = node
                .api()
                .await?
                .trail(TrailRequest {
                    pseudonym: w.pseudonym.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .events;
            match format {
                Format::Table => print!("{}", render::trail(&w.pseudonym, &events)),
                Format::Json => json(
                    &events
                        .iter()
                        .map(crate::render_json::trail_event)
                        .collect::<Vec<_>>(),
                )?,
            }
            Ok(())
        }
        Command::Log(LogCmd::Checkpoint { format, node }) => {
            let s = node
                .api()
                .await?
                .log_status(LogStatusRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            match format {
                Format::Json => json(&serde_json::json!({
                    "checkpoint": String::from_utf8_lossy(&s.checkpoint), "size": s.size, "proven": s.proven,
                    "unproven": s.unproven, "alarm": s.alarm, "alarm_reason": s.alarm_reason,
                }))?,
                Format::Table => {
                    if s.checkpoint.is_empty() {
                        println!("This node has not verified a checkpoint of the hub's log yet.");
                    } else {
                        print!("{}", String::from_utf8_lossy(&s.checkpoint));
                        println!(
                            "Verified: {} entries. Envelopes of this node proven in the log: {}, not yet: {}.",
                            s.size, s.proven, s.unproven
                        );
                    }
                    if s.alarm {
                        println!(
                            "ALARM: {}. This node has stopped sending; the evidence is kept.",
                            s.alarm_reason
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Log(LogCmd::Prove {
            envelope,
            format,
            node,
        }) => {
            let id = hex::decode(envelope.trim())
                .with_context(|| format!("{envelope:?} is not an envelope id in hex"))?;
            let p = node
                .api()
                .await?
                .prove_envelope(overstap_proto::pb::ProveEnvelopeRequest { envelope_id: id })
                .await
                .map_err(explain)?
                .into_inner();
            let e = p.entry.unwrap_or_default();
            match format {
                Format::Json => json(&serde_json::json!({
                    "log_index": p.log_index, "tree_size": p.tree_size,
                    "proof": p.proof.iter().map(hex::encode).collect::<Vec<_>>(),
                    "entry": { "event": e.event, "from_org": e.from_org, "to_org": e.to_org,
                               "envelope_id": hex::encode(&e.envelope_id), "at": e.at },
                    "checkpoint": String::from_utf8_lossy(&p.checkpoint),
                }))?,
                Format::Table => println!(
                    "Envelope {} ({} from {} to {}, {}) is entry {} of the hub's log of {} entries: proven with {} hashes against the checkpoint this node verified.",
                    hex::encode(&e.envelope_id),
                    e.event,
                    e.from_org,
                    e.to_org,
                    overstap_proto::format_time(e.at),
                    p.log_index,
                    p.tree_size,
                    p.proof.len()
                ),
            }
            Ok(())
        }
        Command::Log(LogCmd::Audit { node_dir, format }) => {
            let a = crate::audit::audit(&node_dir).await?;
            match format {
                Format::Json => json(&a)?,
                Format::Table => {
                    let verdict = |ok: bool| if ok { "matches" } else { "DOES NOT MATCH" };
                    println!(
                        "{} entries fetched and hashed. The checkpoint this node verified ({} entries): {}. The hub's newest checkpoint ({} entries): {}.",
                        a.entries,
                        a.node_checkpoint,
                        verdict(a.node_checkpoint_matches),
                        a.hub_checkpoint,
                        verdict(a.hub_checkpoint_matches),
                    );
                    println!(
                        "{} of the {} checkpoints this node stored match; {} entries of this node's own envelopes were compared.",
                        a.checkpoints_matching, a.checkpoints_checked, a.own_entries_checked
                    );
                    if a.malformed_entries > 0 {
                        println!("{} entries are malformed.", a.malformed_entries);
                    }
                    if let Some(d) = &a.first_divergence {
                        println!(
                            "First divergence{}: {}.",
                            match d.entry {
                                Some(e) => format!(" at entry {e}"),
                                None => format!(
                                    " between entries {} and {}",
                                    d.last_matching_size,
                                    d.first_failing_size.unwrap_or(a.entries)
                                ),
                            },
                            d.detail
                        );
                    }
                }
            }
            if !a.ok() {
                bail!("the log audit failed: the hub's entries do not make its checkpoints");
            }
            Ok(())
        }
        Command::Stats {
            format,
            since,
            by,
            node_dir,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let since = match since {
                Some(s) => crate::stats::parse_since(&s, now)?,
                None => 0,
            };
            let stats = crate::stats::fetch(&node_dir, since).await?;
            print!("{}", crate::stats::render(&stats, by, format)?);
            Ok(())
        }
        Command::Bench(BenchCmd::Hub {
            envelopes,
            senders,
            rounds,
            postgres,
            nats,
            format,
        }) => {
            let b = crate::bench_hub::hub_bench(
                envelopes.max(16),
                senders.max(1),
                rounds.max(1),
                &[4 << 10, 100 << 10],
                postgres,
                nats,
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => {
                    for f in &b.figures {
                        print!(
                            "{:>6} B: hub on SQLite {:.0}/s, no-op baseline {:.0}/s, ratio {:.2}",
                            f.payload_bytes,
                            f.sqlite_per_s,
                            f.baseline_per_s,
                            f.sqlite_over_baseline
                        );
                        if let (Some(p), Some(r)) = (f.postgres_per_s, f.sqlite_over_postgres) {
                            print!("; hub on PostgreSQL {p:.0}/s, SQLite ÷ PostgreSQL {r:.2}");
                        }
                        if let (Some(p), Some(r)) =
                            (f.postgres_two_replicas_per_s, f.one_replica_over_two)
                        {
                            print!("; two replicas {p:.0}/s, one ÷ two {r:.2}");
                        }
                        if let (Some(n), Some(r)) = (f.nats_per_s, f.hub_over_nats) {
                            print!("; NATS JetStream {n:.0}/s, hub ÷ JetStream {r:.2}");
                        }
                        println!();
                    }
                }
            }
            Ok(())
        }
        Command::Bench(BenchCmd::Handover {
            cohort,
            samples,
            rate,
            format,
        }) => {
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                anyhow::bail!("--rate must be a number of handovers per second above 0");
            }
            let b = crate::bench_handover::handover_bench(
                cohort.max(1),
                samples.max(1),
                rate,
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "cohort of {} passports to {} mbo nodes: all stored after {:.2} s ({:.0}/s); {} single handovers at {:.0}/s: p50 {:.1} ms, p99 {:.1} ms",
                    b.cohort,
                    b.mbo_nodes,
                    b.cohort_seconds,
                    b.cohort_per_s,
                    b.samples,
                    b.latency_rate_per_s,
                    b.latency_p50_ms,
                    b.latency_p99_ms
                ),
            }
            Ok(())
        }
        Command::Bench(BenchCmd::Subscribers { members, format }) => {
            let b = crate::bench_subscribers::subscribers_bench(
                members.max(1),
                None,
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "{} members subscribed and idle: the hub holds {:.1} MiB ({:.1} MiB before anyone subscribed, {:.1} KiB per subscriber); opening them took {:.1} s",
                    b.subscribed,
                    b.hub_rss_subscribed_mib,
                    b.hub_rss_idle_mib,
                    b.kib_per_subscriber,
                    b.open_seconds
                ),
            }
            Ok(())
        }
        Command::Bench(BenchCmd::Log {
            entries,
            envelopes,
            format,
        }) => {
            let b =
                crate::bench::log_bench(entries.max(2), envelopes.max(16), &mut std::io::stderr())
                    .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "log of {} entries: inclusion proof {} bytes (made {:.1} µs, checked {:.1} µs), consistency proof {} bytes (checked {:.1} µs)\n\
                     routing {} envelopes of 4 KiB: {:.0}/s with the log, {:.0}/s without; ratio {:.2}\n\
                     routing with the log already holding {} entries: {:.0}/s; ÷ an empty log {:.2}",
                    b.entries,
                    b.inclusion_proof_bytes,
                    b.prove_inclusion_us,
                    b.check_inclusion_us,
                    b.consistency_proof_bytes,
                    b.check_consistency_us,
                    b.envelopes,
                    b.routed_per_s_log_on,
                    b.routed_per_s_log_off,
                    b.ratio_on_over_off,
                    b.entries,
                    b.routed_per_s_full_log,
                    b.ratio_full_over_empty
                ),
            }
            Ok(())
        }
        Command::Handovers { format, node } => {
            let items = node
                .api()
                .await?
                .handovers(HandoversRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .handovers;
            match format {
                Format::Table => print!("{}", render::handovers(&items, now())),
                Format::Json => json(
                    &items
                        .iter()
                        .map(crate::render_json::handover)
                        .collect::<Vec<_>>(),
                )?,
            }
            Ok(())
        }
        Command::Status {
            grant,
            set,
            staff,
            node,
        } => {
            node.api()
                .await?
                .set_status(SetStatusRequest {
                    grant_id: grant.clone(),
                    status: set.clone(),
                    staff_user: staff,
                })
                .await
                .map_err(explain)?;
            println!("Status of {grant} is now \"{set}\"; the school will hear of it.");
            Ok(())
        }
        Command::Send { mut grant, node } => {
            let mut api = node.api().await?;
            if grant.len() == 1 {
                let grant_id = grant.remove(0);
                let r = api
                    .send_passport(SendPassportRequest { grant_id })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("{}", sent_line(&r, true));
                return Ok(());
            }
            let results = api
                .send_passports(SendPassportsRequest { grant_ids: grant })
                .await
                .map_err(explain)?
                .into_inner()
                .results;
            let mut failed = 0;
            for r in &results {
                match &r.sent {
                    Some(sent) if r.error.is_empty() => {
                        println!("{}: {}", r.grant_id, sent_line(sent, false))
                    }
                    _ => {
                        failed += 1;
                        println!("{}: not sent: {}", r.grant_id, r.error);
                    }
                }
            }
            if failed > 0 {
                bail!(
                    "{failed} of {} passports were not sent; the reasons are above. The others are on their way.",
                    results.len()
                );
            }
            println!(
                "All {} passports are sealed and queued. See `overstap outbox`.",
                results.len()
            );
            Ok(())
        }
        Command::Inbox {
            show,
            staff,
            format,
            node,
        } => {
            let mut api = node.api().await?;
            match show {
                Some(grant_id) => {
                    let Some(staff_user) = staff else {
                        bail!(
                            "say who is reading (--staff NAME or OVERSTAP_STAFF): every view is logged"
                        );
                    };
                    let p = api
                        .show_passport(ShowPassportRequest {
                            grant_id,
                            staff_user,
                        })
                        .await
                        .map_err(explain)?
                        .into_inner();
                    match format {
                        Format::Table => print!("{}", render::passport(&p)),
                        Format::Json => json(&crate::render_json::passport(&p))?,
                    }
                }
                None => {
                    let items = api
                        .inbox(InboxRequest {})
                        .await
                        .map_err(explain)?
                        .into_inner()
                        .items;
                    match format {
                        Format::Table => print!("{}", render::inbox(&items)),
                        Format::Json => json(
                            &items
                                .iter()
                                .map(crate::render_json::inbox_item)
                                .collect::<Vec<_>>(),
                        )?,
                    }
                }
            }
            Ok(())
        }
        Command::Outbox { format, node } => {
            let items = node
                .api()
                .await?
                .outbox(OutboxRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .items;
            match format {
                Format::Table => print!("{}", render::outbox(&items)),
                Format::Json => json(
                    &items
                        .iter()
                        .map(crate::render_json::outbox_item)
                        .collect::<Vec<_>>(),
                )?,
            }
            Ok(())
        }
        Command::Health(cmd) => crate::client::health(cmd).await,
        Command::Node(NodeCmd::Status { format, node }) => {
            let s = node
                .api()
                .await?
                .status(NodeStatusRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            match format {
                Format::Json => json(&serde_json::json!({
                    "org_id": s.org_id, "directory_version": s.directory_version, "outbox_pending": s.outbox_pending,
                    "inbox_count": s.inbox_count, "last_delivery_seq": s.last_delivery_seq, "hub_connected": s.hub_connected,
                    "log_alarm": s.log_alarm,
                }))?,
                Format::Table => {
                    println!(
                        "{}: directory version {}, {} waiting in the outbox, {} passports received, hub {}",
                        s.org_id,
                        s.directory_version,
                        s.outbox_pending,
                        s.inbox_count,
                        if s.hub_connected {
                            "connected"
                        } else {
                            "not connected"
                        }
                    );
                    if !s.log_alarm.is_empty() {
                        println!(
                            "LOG ALARM: {}. Sending has stopped; the evidence is kept (see `overstap log checkpoint` and `overstap log audit`).",
                            s.log_alarm
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Demo { dir, serve } => {
            let (dir, _keep) = match dir {
                Some(d) => {
                    if d.exists() && std::fs::read_dir(&d)?.next().is_some() {
                        bail!(
                            "{} is not empty; give a new or empty folder for the demo region",
                            d.display()
                        );
                    }
                    (d, None)
                }
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("overstap-demo-")
                        .tempdir()?;
                    (t.path().to_path_buf(), Some(t))
                }
            };
            demo::run(&dir, &mut std::io::stdout(), serve).await?;
            Ok(())
        }
    }
}

async fn authority(cmd: AuthorityCmd) -> anyhow::Result<()> {
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

/// What became of one passport sent, for people.
fn sent_line(r: &overstap_proto::pb::SendPassportResponse, hint: bool) -> String {
    if r.waits_until > 0 {
        format!(
            "The consent starts on {}; the package for {} waits in the outbox until then.",
            overstap_proto::format_time(r.waits_until),
            r.to_org
        )
    } else {
        format!(
            "Sealed for {} and queued (envelope {}){}",
            r.to_org,
            hex::encode(&r.envelope_id),
            if hint {
                "; the node pushes it to the hub. See `overstap outbox`."
            } else {
                "."
            }
        )
    }
}
