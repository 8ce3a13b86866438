//! The `overstap` command line: parsing and dispatch. Each command is a few lines over the
//! libraries (`overstap-region` for what the parties do, `overstap-bench` for load runs).
//!
//! Rooms: [`authority`] (the regional authority), [`member`] (a member making its own keys), [`student`] (the student's and guardian's side),
//! [`exchange`] (sending, inbox, handovers, statuses, outbox, node state), [`log`] (the hub's
//! log as this node checks it), [`staff`] (the web app's staff accounts), [`bench`] (load runs);
//! stats, health and the demo are here.

mod authority;
mod bench;
mod exchange;
mod log;
mod member;
mod staff;
mod student;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use overstap_region::client::{Api, connect, connect_dir};

use crate::demo;
pub use crate::health::HealthCmd;

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
    pub(super) async fn api(&self) -> anyhow::Result<Api> {
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
    Authority(authority::AuthorityCmd),
    /// A member's own keys, made on its own machine, and its requests to join or rotate.
    #[command(subcommand)]
    Member(member::MemberCmd),
    /// A guardian's key, for students under 16.
    #[command(subcommand)]
    Guardian(student::GuardianCmd),
    /// Students (run on the student's side; the home node issues the card).
    #[command(subcommand)]
    Student(student::StudentCmd),
    /// Fill in and sign the Paspoort voor Succes.
    #[command(subcommand)]
    Passport(student::PassportCmd),
    /// Consent: who may read which sections, for what, until when.
    #[command(subcommand)]
    Consent(student::ConsentCmd),
    /// Push a student's passport under a grant (at transition time); name --grant once for each
    /// student of a class to push them all in one go.
    Send(exchange::SendArgs),
    /// Received passports; --show one (the view is logged with your name).
    Inbox(exchange::InboxArgs),
    /// Fetch a passport the student let this node fetch, without waiting for the school to send
    /// it (--grant); without --grant, the consents this node may fetch under.
    Pull(exchange::PullArgs),
    /// A student's single-use code for one consent, to show at the intake: the recipient
    /// fetches the passport with it (`overstap pull --code`).
    PickupCode(student::PickupCodeArgs),
    /// The school's handovers: to whom, consent state, the recipient's status, age, views.
    Handovers(exchange::HandoversArgs),
    /// Set the status of a received passport (reported back to the school).
    Status(exchange::StatusArgs),
    /// What this node sent, and what became of it.
    Outbox(exchange::OutboxArgs),
    /// The node's state: directory version, outbox, inbox, hub connection.
    #[command(subcommand)]
    Node(exchange::NodeCmd),
    /// The hub's verifiable log, as this node checks it.
    #[command(subcommand)]
    Log(log::LogCmd),
    /// Staff accounts of the node's web app.
    #[command(subcommand)]
    Staff(staff::StaffCmd),
    /// The region's exchange in aggregate, for coordinators: per organisation pair, per kind
    /// of member over time, and who has envelopes waiting. Counts under 5 read "<5".
    Stats {
        /// table for people; csv or json for programs and spreadsheets (JSON holds everything).
        #[arg(long, value_enum, default_value_t = crate::stats::ReportFormat::Table)]
        format: crate::stats::ReportFormat,
        /// From this date (YYYY-MM-DD) or this many days back (30d); a year when not given.
        #[arg(long, conflicts_with = "period")]
        since: Option<String>,
        /// A school year (2025-2026, from 1 August) or a quarter (2026-Q1), as the dashboard
        /// and its CSV export count them.
        #[arg(long)]
        period: Option<String>,
        /// pair (per pair of organisations), kind (per week, by kind of member), waiting (what
        /// waits to be picked up) or dropout (per receiver: not picked up in time, no intake).
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
    Bench(bench::BenchCmd),
    /// Run a whole region on this machine and tell the story of a warm handover.
    Demo {
        /// Keep the region's files here (default: a fresh temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the region running after the story, for the CLI to explore.
        #[arg(long)]
        serve: bool,
        /// Run a school year of traffic in a larger region instead (10 schools, 4 mbo colleges,
        /// 3 municipalities, 1,500 handovers), for the coordinators' dashboard. Takes a minute
        /// or two.
        #[arg(long)]
        year: bool,
        /// With --year: three schools, two colleges, a municipality and 160 handovers.
        #[arg(long, requires = "year")]
        small: bool,
        /// With --year: this many handovers instead.
        #[arg(long, requires = "year")]
        handovers: Option<usize>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a list is printed: a table for people, or CSV or JSON for programs and spreadsheets.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Csv,
    Json,
}

/// Prints `items` as `format` asks: the table `table` makes, or each item's JSON shape `row`
/// as a JSON array or as CSV with `columns`.
pub(super) fn print_list<T>(
    format: ListFormat,
    items: &[T],
    table: impl FnOnce(&[T]) -> String,
    row: fn(&T) -> serde_json::Value,
    columns: &[&str],
) -> anyhow::Result<()> {
    match format {
        ListFormat::Table => print!("{}", table(items)),
        ListFormat::Json => json(&items.iter().map(row).collect::<Vec<_>>())?,
        ListFormat::Csv => print!(
            "{}",
            crate::render_data::csv(columns, &items.iter().map(row).collect::<Vec<_>>())
        ),
    }
    Ok(())
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Authority(cmd) => authority::authority(cmd).await,
        Command::Member(cmd) => member::member(cmd),
        Command::Guardian(cmd) => student::guardian(cmd).await,
        Command::Student(cmd) => student::student(cmd).await,
        Command::Passport(cmd) => student::passport(cmd).await,
        Command::Consent(cmd) => student::consent(cmd).await,
        Command::Send(args) => exchange::send(args).await,
        Command::Inbox(args) => exchange::inbox(args).await,
        Command::Pull(args) => exchange::pull(args).await,
        Command::PickupCode(args) => student::pickup_code(args).await,
        Command::Handovers(args) => exchange::handovers(args).await,
        Command::Status(args) => exchange::status(args).await,
        Command::Outbox(args) => exchange::outbox(args).await,
        Command::Node(cmd) => exchange::node(cmd).await,
        Command::Log(cmd) => log::log(cmd).await,
        Command::Staff(cmd) => staff::staff(cmd).await,
        Command::Bench(cmd) => bench::bench(cmd).await,
        Command::Health(cmd) => crate::health::health(cmd).await,
        Command::Stats {
            format,
            since,
            period,
            by,
            node_dir,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let (since, until) = match (since, period) {
                (Some(s), _) => (crate::stats::parse_since(&s, now)?, 0),
                (None, Some(p)) => {
                    let p = overstap_hub::stats::period::Period::parse(&p)
                        .map_err(anyhow::Error::msg)?;
                    (p.since, p.until)
                }
                (None, None) => (0, 0),
            };
            let stats = crate::stats::fetch(&node_dir, since, until).await?;
            print!("{}", crate::stats::render(&stats, by, format)?);
            Ok(())
        }
        Command::Demo {
            dir,
            serve,
            year,
            small,
            handovers,
        } => {
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
            if year {
                crate::demo_year::run(&dir, &mut std::io::stdout(), serve, small, handovers)
                    .await?;
            } else {
                demo::run(&dir, &mut std::io::stdout(), serve).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_flag_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command itself)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "overstap", &mut missing);
        assert!(missing.is_empty(), "without a help line: {missing:#?}");
    }
}
