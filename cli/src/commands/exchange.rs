//! The exchange at a node: sending passports under consent, the inbox and what a recipient
//! reads, the school's handovers, statuses back to the school, the outbox, and the node's state.

use anyhow::bail;
use clap::{Args, Subcommand};
use overstap_proto::pb::{
    FetchPassportRequest, FetchableRequest, HandoversRequest, InboxRequest, NodeStatusRequest,
    OutboxRequest, RedeemPickupCodeRequest, SendPassportRequest, SendPassportsRequest,
    SetStatusRequest, ShowPassportRequest,
};
use overstap_region::client::explain;

use super::{Format, ListFormat, NodeOpts, json, now, print_list};
use crate::{render, render_data};

#[derive(Args)]
pub struct SendArgs {
    /// The consent to send under (g-…, as `consent grant` printed it); once for each student.
    #[arg(long, required = true)]
    grant: Vec<String>,
    /// Seal and send again a passport version this consent's recipient already has or has on
    /// its way (without it, such a grant is named and nothing is sealed).
    #[arg(long)]
    again: bool,
    #[command(flatten)]
    node: NodeOpts,
}

#[derive(Args)]
pub struct InboxArgs {
    /// Show the passport received under this consent (g-…); the view is logged with --staff.
    #[arg(long)]
    show: Option<String>,
    /// Your name or staff id, logged with every view.
    #[arg(long, env = "OVERSTAP_STAFF")]
    staff: Option<String>,
    /// table for people; csv or json for programs and spreadsheets.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
    #[command(flatten)]
    node: NodeOpts,
}

#[derive(Args)]
pub struct HandoversArgs {
    /// table for people; csv or json for programs and spreadsheets.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
    #[command(flatten)]
    node: NodeOpts,
}

#[derive(Args)]
pub struct PullArgs {
    /// Ask the student's school for the passport under this consent (g-…, as the list shows
    /// it); without it (and without --code), list the consents this node may fetch under.
    #[arg(long, conflicts_with = "code")]
    grant: Option<String>,
    /// Fetch with the pickup code a student shows you ("25LP-K7QM-3XPA").
    #[arg(long)]
    code: Option<String>,
    /// Your name or staff id, logged with the request.
    #[arg(long, env = "OVERSTAP_STAFF")]
    staff: Option<String>,
    /// table for people; csv or json for programs and spreadsheets.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
    #[command(flatten)]
    node: NodeOpts,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The consent the passport came under (g-…, as `overstap inbox` shows it).
    #[arg(long)]
    grant: String,
    /// The new status: ontvangen, gelezen, "intake gepland", gestart or "niet gestart".
    #[arg(long)]
    set: String,
    /// Your name or staff id, logged with the change.
    #[arg(long, env = "OVERSTAP_STAFF")]
    staff: String,
    #[command(flatten)]
    node: NodeOpts,
}

#[derive(Args)]
pub struct OutboxArgs {
    /// table for people; csv or json for programs and spreadsheets.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
    #[command(flatten)]
    node: NodeOpts,
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// The node's directory version, outbox, inbox, hub connection and any log alarm.
    Status {
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
}

/// Grants asked for in one call to the node when a class is sent: each call's answers are
/// printed as they come, so a send cut off mid-way has already said which grants went.
const SEND_CHUNK: usize = 100;

pub(super) async fn send(
    SendArgs {
        mut grant,
        again,
        node,
    }: SendArgs,
) -> anyhow::Result<()> {
    let mut api = node.api().await?;
    if grant.len() == 1 {
        let grant_id = grant.remove(0);
        let r = api
            .send_passport(SendPassportRequest {
                grant_id: grant_id.clone(),
                again,
            })
            .await
            .map_err(|e| cut_off(e, 0, 1))?
            .into_inner();
        println!("{}", sent_line(&r, true));
        if r.already_sent {
            println!("To send it once more anyway: overstap send --grant {grant_id} --again");
        }
        return Ok(());
    }
    let total = grant.len();
    let (mut answered, mut failed, mut already) = (0, 0, 0);
    for chunk in grant.chunks(SEND_CHUNK) {
        let results = api
            .send_passports(SendPassportsRequest {
                grant_ids: chunk.to_vec(),
                again,
            })
            .await
            .map_err(|e| cut_off(e, answered, total))?
            .into_inner()
            .results;
        for r in &results {
            match &r.sent {
                Some(sent) if r.error.is_empty() => {
                    already += usize::from(sent.already_sent);
                    println!("{}: {}", r.grant_id, sent_line(sent, false))
                }
                _ => {
                    failed += 1;
                    println!("{}: not sent: {}", r.grant_id, r.error);
                }
            }
        }
        answered += chunk.len();
        if total > SEND_CHUNK {
            eprintln!("{answered} of {total} grants done");
        }
    }
    if already > 0 {
        println!(
            "{already} of {total} passports had been sent already; nothing was sealed for them \
             (--again sends them once more)."
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {total} passports were not sent; the reasons are above. The others are on their way."
        );
    }
    println!("All {total} passports are sealed and queued. See `overstap outbox`.");
    Ok(())
}

/// The node stopped answering a send after `answered` of `total` grants had their answers
/// printed: says what is known, and that sending again is safe.
fn cut_off(status: tonic::Status, answered: usize, total: usize) -> anyhow::Error {
    let reason = explain(status);
    let rest = total - answered;
    let unknown = match (answered, rest) {
        (0, 1) => "Whether the passport was sealed is not known.".to_string(),
        (0, n) => format!("Whether the {n} passports were sealed is not known."),
        (a, n) => format!(
            "The {a} grants above have their answers; whether the other {n} were sealed is not known."
        ),
    };
    anyhow::anyhow!(
        "{reason}. {unknown} Run the same command again: a passport already sealed under its \
         grant is named and not sealed twice."
    )
}

pub(super) async fn inbox(
    InboxArgs {
        show,
        staff,
        format,
        node,
    }: InboxArgs,
) -> anyhow::Result<()> {
    let mut api = node.api().await?;
    match show {
        Some(grant_id) => {
            let Some(staff_user) = staff else {
                bail!("say who is reading (--staff NAME or OVERSTAP_STAFF): every view is logged");
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
                ListFormat::Table => print!("{}", render::passport(&p)),
                ListFormat::Json => json(&render_data::passport(&p))?,
                ListFormat::Csv => print!(
                    "{}",
                    render_data::csv(render_data::ANSWER_COLUMNS, &render_data::answers(&p))
                ),
            }
        }
        None => {
            let items = api
                .inbox(InboxRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .items;
            let table = |items: &[_]| render::inbox(items);
            print_list(
                format,
                &items,
                table,
                render_data::inbox_item,
                render_data::INBOX_COLUMNS,
            )?;
        }
    }
    Ok(())
}

pub(super) async fn handovers(HandoversArgs { format, node }: HandoversArgs) -> anyhow::Result<()> {
    let items = node
        .api()
        .await?
        .handovers(HandoversRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .handovers;
    let table = |items: &[_]| render::handovers(items, now());
    print_list(
        format,
        &items,
        table,
        render_data::handover,
        render_data::HANDOVER_COLUMNS,
    )
}

pub(super) async fn pull(
    PullArgs {
        grant,
        code,
        staff,
        format,
        node,
    }: PullArgs,
) -> anyhow::Result<()> {
    let mut api = node.api().await?;
    if let Some(code) = code {
        let Some(staff_user) = staff else {
            bail!("say who is asking (--staff NAME or OVERSTAP_STAFF): every request is logged");
        };
        let asked = api
            .redeem_pickup_code(RedeemPickupCodeRequest { code, staff_user })
            .await
            .map_err(explain)?
            .into_inner();
        println!(
            "Asked {} with the student's code. The passport arrives like a sent one: see `overstap inbox`.",
            asked.home_org
        );
        return Ok(());
    }
    let Some(grant_id) = grant else {
        let grants = api
            .fetchable(FetchableRequest {})
            .await
            .map_err(explain)?
            .into_inner()
            .grants;
        return print_list(
            format,
            &grants,
            |g: &[_]| render::fetchable(g),
            render_data::fetchable,
            render_data::FETCHABLE_COLUMNS,
        );
    };
    let Some(staff_user) = staff else {
        bail!("say who is asking (--staff NAME or OVERSTAP_STAFF): every request is logged");
    };
    let asked = api
        .fetch_passport(FetchPassportRequest {
            grant_id: grant_id.clone(),
            staff_user,
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "Asked {} for the passport under {grant_id}. It arrives like a sent one: see `overstap inbox`. \
         If the school says no, `overstap pull` shows it.",
        asked.home_org
    );
    Ok(())
}

pub(super) async fn status(
    StatusArgs {
        grant,
        set,
        staff,
        node,
    }: StatusArgs,
) -> anyhow::Result<()> {
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

pub(super) async fn outbox(OutboxArgs { format, node }: OutboxArgs) -> anyhow::Result<()> {
    let items = node
        .api()
        .await?
        .outbox(OutboxRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .items;
    let table = |items: &[_]| render::outbox(items);
    print_list(
        format,
        &items,
        table,
        render_data::outbox_item,
        render_data::OUTBOX_COLUMNS,
    )
}

pub(super) async fn node(cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Status { format, node } => {
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
    }
}

/// What became of one passport sent, for people.
fn sent_line(r: &overstap_proto::pb::SendPassportResponse, hint: bool) -> String {
    if r.already_sent {
        format!(
            "version {} was sent to {} already (delivered, or on its way); nothing was sealed.",
            r.version, r.to_org
        )
    } else if r.waits_until > 0 {
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
