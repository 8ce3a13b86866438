//! The student's and the guardian's side: a guardian's key, a student's wallet and card, filling
//! in and signing the passport, consent and its withdrawal, and the student's trail.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use overstap_proto::pb::{
    AddPickupCodeRequest, GetStudentRequest, Manifest, RegisterStudentRequest,
    ReplaceStudentKeyRequest, TrailRequest,
};
use overstap_proto::sign::{Domain, decode_body};
use overstap_region::client::{Api, explain};
use overstap_region::passport::{
    GrantRequest, draft_from_answers, fill_interactive, make_grant, make_pickup_code,
    make_revocation, parse_date, revoke, sign_passport, upload_grant,
};
use overstap_region::wallet::{Wallet, load_key, new_guardian_key};

use super::{Format, ListFormat, NodeOpts, json, now, print_list};
use crate::{render, render_data};

#[derive(Subcommand)]
pub enum GuardianCmd {
    /// Make a guardian key (kept by the parent); prints the public key to register with.
    New {
        /// Where to write the guardian's key file; it stays with the parent.
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
        /// The student's birth month (YYYY-MM): under 16, a guardian co-signs.
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
        /// The student's wallet file (key and card), as `student new` wrote it.
        #[arg(long)]
        wallet: PathBuf,
        /// table for people; csv or json for programs and spreadsheets.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Every card the hub's log lists under the student's name (by a keyed hash, never the
    /// name): a card you do not know means someone made a key for you.
    Cards {
        /// The student's wallet file (key and card), as `student new` wrote it.
        #[arg(long)]
        wallet: PathBuf,
        /// table for people, json for programs.
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
        /// The question set: pvs-mbo-v1 (to mbo) or pvs-werk-v1 (to work); `passport questions`
        /// lists them.
        #[arg(long, default_value = "pvs-mbo-v1")]
        set: String,
        /// Where to save the draft (JSON), to read once more and sign.
        #[arg(long)]
        out: PathBuf,
        /// A JSON answers file: {"section": {"question": "answer" or {"answer":..,"smiley":..}}}.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Sign the draft as the next passport version and store it at the home node.
    Sign {
        /// The student's wallet file (key and card), as `student new` wrote it.
        #[arg(long)]
        wallet: PathBuf,
        /// The draft to sign, as `passport fill` saved it.
        #[arg(long)]
        draft: PathBuf,
        /// The guardian's key file; needed when the student is under 16.
        #[arg(long)]
        guardian_key: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// The sections and questions of a question set, with the ids an answers file
    /// (`passport fill --from`) and a consent (`consent grant --sections`) use.
    Questions {
        /// The question set; without it, every set this build knows.
        #[arg(long)]
        set: Option<String>,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum ConsentCmd {
    /// Consent to one organisation reading some sections, for a purpose, until a date.
    Grant {
        /// The student's wallet file (key and card), as `student new` wrote it.
        #[arg(long)]
        wallet: PathBuf,
        /// The organisation that may read: its BRIN code (30RT) or municipality code (GM0193).
        #[arg(long)]
        to: String,
        /// Comma-separated section ids, e.g. wie-ben-ik,wat-heb-ik-nodig (`passport questions`
        /// lists them).
        #[arg(long, value_delimiter = ',')]
        sections: Vec<String>,
        /// What the recipient may use it for: intake, begeleiding, werk or nazorg.
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
        /// The recipient may also fetch the passport itself while the grant lasts (a pull);
        /// the home node tells it so.
        #[arg(long)]
        may_fetch: bool,
        /// The guardian's key file; needed when the student is under 16.
        #[arg(long)]
        guardian_key: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Withdraw a consent: the recipient erases what it brought and sends a signed receipt.
    Revoke {
        /// The student's wallet file (key and card), as `student new` wrote it.
        #[arg(long)]
        wallet: PathBuf,
        /// The consent to withdraw (g-…, as `consent grant` printed it).
        #[arg(long)]
        grant: String,
        /// The guardian's key file; needed when the student is under 16.
        #[arg(long)]
        guardian_key: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
}

#[derive(Args)]
pub struct PickupCodeArgs {
    /// The student's wallet file (key and card), as `student new` wrote it.
    #[arg(long)]
    wallet: PathBuf,
    /// The consent the code lets its recipient fetch under (g-…).
    #[arg(long)]
    grant: String,
    /// How long the code works, in minutes (at most 60).
    #[arg(long, default_value_t = 15)]
    minutes: i64,
    #[command(flatten)]
    node: NodeOpts,
}

pub(super) async fn pickup_code(args: PickupCodeArgs) -> anyhow::Result<()> {
    let w = Wallet::load(&args.wallet)?;
    let (shown, signed) = make_pickup_code(&w, &args.grant, args.minutes, now())?;
    args.node
        .api()
        .await?
        .add_pickup_code(AddPickupCodeRequest { code: Some(signed) })
        .await
        .map_err(explain)?;
    println!(
        "Show this code at the intake; it works once, for {} minutes:\n\n   {shown}\n",
        args.minutes
    );
    Ok(())
}

pub(super) async fn guardian(cmd: GuardianCmd) -> anyhow::Result<()> {
    match cmd {
        GuardianCmd::New { out } => {
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
    }
}

pub(super) async fn student(cmd: StudentCmd) -> anyhow::Result<()> {
    match cmd {
        StudentCmd::New {
            wallet,
            birth_month,
            guardian_pubs,
            staff,
            node,
        } => {
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

        StudentCmd::LostKey {
            pseudonym,
            wallet,
            guardian_pubs,
            staff,
            node,
        } => {
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

        StudentCmd::Cards {
            wallet,
            format,
            node,
        } => {
            let w = Wallet::load(&wallet)?;
            let listed = node
                .api()
                .await?
                .student_cards(overstap_proto::pb::StudentCardsRequest {
                    pseudonym: w.pseudonym.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let mine = overstap_proto::passport::card_sha256(&w.card).to_vec();
            let unknown = listed
                .cards
                .iter()
                .filter(|c| !c.issued_here || (c.card_sha256 != mine && c.current))
                .count();
            if format == Format::Json {
                return json(&serde_json::json!({
                    "cards": listed.cards.iter().map(|c| serde_json::json!({
                        "log_index": c.log_index, "from_org": c.from_org,
                        "card_sha256": hex::encode(&c.card_sha256), "at": c.at,
                        "issued_here": c.issued_here, "current": c.current,
                        "this_wallet": c.card_sha256 == mine,
                    })).collect::<Vec<_>>(),
                    "missing": listed.missing.iter().map(hex::encode).collect::<Vec<_>>(),
                    "unknown": unknown,
                }));
            }
            println!(
                "Cards in the hub's log for this student ({}):",
                listed.cards.len()
            );
            for c in &listed.cards {
                let what = if c.card_sha256 == mine {
                    "the card in this wallet"
                } else if !c.issued_here {
                    "NOT A CARD YOUR SCHOOL ISSUED: someone made a key for you; tell your mentor"
                } else if c.current {
                    "your card now, but NOT the one in this wallet: a new key was made for you; if not by you, tell your mentor"
                } else {
                    "an earlier card (a key you replaced)"
                };
                println!(
                    "  {}  from {}: {what}",
                    overstap_proto::format_time(c.at),
                    c.from_org
                );
            }
            if !listed.missing.is_empty() {
                println!(
                    "The hub's log leaves out {} card(s) your school recorded there: the hub is not keeping its log honestly.",
                    listed.missing.len()
                );
            }
            Ok(())
        }
        StudentCmd::Trail {
            wallet,
            format,
            node,
        } => {
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
            let table = |events: &[_]| render::trail(&w.pseudonym, events);
            print_list(
                format,
                &events,
                table,
                render_data::trail_event,
                render_data::TRAIL_COLUMNS,
            )
        }
    }
}

pub(super) async fn passport(cmd: PassportCmd) -> anyhow::Result<()> {
    match cmd {
        PassportCmd::Fill { set, out, from } => {
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

        PassportCmd::Questions { set, format } => {
            let ids = match set {
                Some(id) => vec![id],
                None => overstap_proto::questions::known_sets()
                    .into_iter()
                    .map(String::from)
                    .collect(),
            };
            let sets = ids
                .iter()
                .map(|id| overstap_proto::questions::question_set(id))
                .collect::<Result<Vec<_>, _>>()?;
            match format {
                Format::Table => print!("{}", render::question_sets(&sets)),
                Format::Json => json(&render_data::question_sets(&sets))?,
            }
            Ok(())
        }
        PassportCmd::Sign {
            wallet,
            draft,
            guardian_key,
            node,
        } => {
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
    }
}

pub(super) async fn consent(cmd: ConsentCmd) -> anyhow::Result<()> {
    match cmd {
        ConsentCmd::Grant {
            wallet,
            to,
            sections,
            purpose,
            until,
            from,
            live,
            may_fetch,
            guardian_key,
            node,
        } => {
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
                may_fetch,
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

        ConsentCmd::Revoke {
            wallet,
            grant,
            guardian_key,
            node,
        } => {
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
    }
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
