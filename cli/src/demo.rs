//! `overstap demo`: a whole region on this machine, and the story of two warm handovers told
//! step by step. Every step is checked; the demo fails (non-zero exit) if any check fails.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use overstap_proto::pb::{
    FetchPassportRequest, FetchableRequest, InboxRequest, MemberKind, NodeStatusRequest,
    SendPassportRequest, ShowPassportRequest,
};
use overstap_proto::sign::generate_signing_key;
use overstap_region::cast::{
    COORDINATOR, GEMEENTE, MBO, NOOR_ANSWERS, OTHER_MBO, SAM_ANSWERS, SCHOOL, answer_texts,
    birth_month, demo_orgs, register,
};
use overstap_region::client::{Api, explain};
use overstap_region::passport::{
    Answers, GrantRequest, draft_from_answers, make_grant, sign_passport, upload_grant,
};
use overstap_region::region::{Org, Region};

use crate::render;

/// Keeps score of the checks and tells the story.
pub struct Story<'a> {
    out: &'a mut dyn Write,
    pub passed: usize,
    pub failed: Vec<String>,
}

impl<'a> Story<'a> {
    pub fn new(out: &'a mut dyn Write) -> Self {
        Story {
            out,
            passed: 0,
            failed: Vec::new(),
        }
    }

    pub fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    pub fn step(&mut self, n: usize, title: &str) {
        let _ = writeln!(self.out, "\nStep {n}. {title}");
    }

    pub fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            let _ = writeln!(self.out, "   ok  {what}");
        } else {
            self.failed.push(what.to_string());
            let _ = writeln!(self.out, "   FAILED  {what}");
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Polls `check` every 25 ms until it holds or `timeout` passes.
async fn wait_until<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

async fn handovers(api: &mut Api) -> Vec<overstap_proto::pb::Handover> {
    api.handovers(overstap_proto::pb::HandoversRequest {})
        .await
        .map(|r| r.into_inner().handovers)
        .unwrap_or_default()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runs the whole story. Returns the number of checks that passed; errors if any failed.
pub async fn run(dir: &Path, out: &mut dyn Write, serve: bool) -> anyhow::Result<usize> {
    let started = Instant::now();
    let mut story = Story::new(out);
    story.say(
        "Overstap demo: a warm handover from a vmbo school to an mbo college and a municipality.",
    );
    story.say(&format!(
        "Everything runs on this machine, on 127.0.0.1, with SQLite files under {}.",
        dir.display()
    ));

    story.step(
        1,
        "The regional authority sets up the region: a key, a TLS CA, and a signed directory.",
    );
    let orgs = demo_orgs();
    let mut region = Region::start(dir, &orgs).await?;
    let directory = region.authority.directory()?;
    story.say(&format!(
        "   Hub at {}; directory version {}:",
        region.hub_url,
        directory.version()
    ));
    for m in &directory.directory.members {
        story.say(&format!(
            "     {:<7} {:<13} {}",
            m.org_id,
            overstap_proto::directory::kind_name(m.kind()),
            m.display_name
        ));
    }
    story.check(
        directory.directory.members.len() == orgs.len() + 1,
        "every member and the hub are in the signed directory",
    );

    let mut school = region.api(SCHOOL).await?;
    story.step(2, "Two students make a key on their own device; their mentor checks them and the school issues a card.");
    let sam = register(&mut school, &birth_month(17), &[]).await?;
    let guardian = generate_signing_key();
    let noor = register(
        &mut school,
        &birth_month(15),
        &[guardian.verifying_key().to_bytes().to_vec()],
    )
    .await?;
    story.say(&format!(
        "   Sam (17) is {} and Noor (15, with a parent as guardian) is {}.",
        sam.pseudonym, noor.pseudonym
    ));
    story.check(
        sam.pseudonym != noor.pseudonym && sam.pseudonym.starts_with("pvs-"),
        "students get random pseudonyms, not names or numbers",
    );

    story.step(
        3,
        "They fill in their Paspoort voor Succes and sign it (Noor's mother co-signs).",
    );
    let sam_draft = draft_from_answers("pvs-mbo-v1", &serde_json::from_str(SAM_ANSWERS)?)?;
    let noor_draft = draft_from_answers("pvs-mbo-v1", &serde_json::from_str(NOOR_ANSWERS)?)?;
    let v = sign_passport(&mut school, &sam, &sam_draft, None, now()).await?;
    story.check(
        v == 1,
        "Sam's passport version 1 is signed and stored at the school",
    );
    let unsigned = sign_passport(&mut school, &noor, &noor_draft, None, now()).await;
    story.check(
        unsigned
            .as_ref()
            .is_err_and(|e| e.to_string().contains("guardian must co-sign")),
        "Noor alone cannot sign: she is under 16",
    );
    let v = sign_passport(&mut school, &noor, &noor_draft, Some(&guardian), now()).await?;
    story.check(v == 1, "Noor's passport is signed by Noor and her guardian");

    story.step(
        4,
        "They decide who may read which part, for what, and until when.",
    );
    let until = now() + 300 * 86_400;
    let all = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sam_mbo_sections = all(&["wie-ben-ik", "wat-kan-ik", "wat-wil-ik", "wat-heb-ik-nodig"]);
    let sam_gm_sections = all(&["wat-heb-ik-nodig", "ondersteuning-vo"]);
    let noor_mbo_sections = all(&[
        "wie-ben-ik",
        "wat-kan-ik",
        "wat-wil-ik",
        "wat-heb-ik-nodig",
        "ondersteuning-vo",
    ]);
    let grant = |to: &str, sections: &Vec<String>, purpose: &str| GrantRequest {
        to: to.into(),
        sections: sections.clone(),
        purpose: purpose.into(),
        not_before: now() - 60,
        not_after: until,
        live: false,
        may_fetch: false,
    };
    // The municipality may fetch the newest version of what Sam shares with it.
    let fetching = |to: &str, sections: &Vec<String>, purpose: &str| GrantRequest {
        live: true,
        may_fetch: true,
        ..grant(to, sections, purpose)
    };
    let g_sam_mbo = upload_grant(
        &mut school,
        make_grant(
            &sam,
            "pvs-mbo-v1",
            &grant(MBO, &sam_mbo_sections, "intake"),
            None,
            now(),
        )?,
    )
    .await?;
    story.say(&format!(
        "   Sam -> {MBO} (intake): {}",
        sam_mbo_sections.join(", ")
    ));
    let g_sam_gm = upload_grant(
        &mut school,
        make_grant(
            &sam,
            "pvs-mbo-v1",
            &fetching(GEMEENTE, &sam_gm_sections, "begeleiding"),
            None,
            now(),
        )?,
    )
    .await?;
    story.say(&format!(
        "   Sam -> {GEMEENTE} (begeleiding, and they may fetch his newest version): {}",
        sam_gm_sections.join(", ")
    ));
    let without_guardian = make_grant(
        &noor,
        "pvs-mbo-v1",
        &grant(MBO, &noor_mbo_sections, "intake"),
        None,
        now(),
    );
    story.check(
        without_guardian
            .as_ref()
            .is_err_and(|e| e.to_string().contains("guardian must co-sign")),
        "a consent from Noor without her guardian is refused before it leaves her device",
    );
    let g_noor_mbo = upload_grant(
        &mut school,
        make_grant(
            &noor,
            "pvs-mbo-v1",
            &grant(MBO, &noor_mbo_sections, "intake"),
            Some(&guardian),
            now(),
        )?,
    )
    .await?;
    story.say(&format!(
        "   Noor -> {MBO} (intake, with her guardian): all five sections"
    ));
    story.say(&format!("   Nobody consented to {OTHER_MBO}."));

    story.step(
        5,
        "At transition time the school pushes the passports through the hub.",
    );
    // Sam's consent for the municipality lets it fetch: the school sends nothing there.
    for g in [&g_sam_mbo, &g_noor_mbo] {
        let r = school
            .send_passport(SendPassportRequest {
                grant_id: g.clone(),
                ..Default::default()
            })
            .await
            .map_err(explain)?
            .into_inner();
        story.say(&format!(
            "   sealed for {} (envelope {})",
            r.to_org,
            &hex::encode(&r.envelope_id)[..12]
        ));
    }
    let push = Instant::now();
    region
        .wait_for(
            SCHOOL,
            Duration::from_secs(30),
            "the outbox emptying",
            |s| s.outbox_pending == 0,
        )
        .await?;
    region
        .wait_for(
            MBO,
            Duration::from_secs(30),
            "two passports arriving",
            |s| s.inbox_count >= 2,
        )
        .await?;
    story.check(
        true,
        &format!(
            "both handovers verified, opened and stored in {} ms",
            push.elapsed().as_millis()
        ),
    );

    story.step(6, &format!("The intaker at {MBO} opens Sam's passport."));
    let mut mbo = region.api(MBO).await?;
    let shown = mbo
        .show_passport(ShowPassportRequest {
            grant_id: g_sam_mbo.clone(),
            staff_user: "intake.jansen".into(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    for line in render::passport(&shown).lines() {
        story.say(&format!("   | {line}"));
    }
    let ids: Vec<_> = shown
        .sections
        .iter()
        .map(|s| s.section_id.clone())
        .collect();
    story.check(
        ids == sam_mbo_sections,
        &format!("{MBO} holds exactly the four sections Sam consented to"),
    );
    let texts: Vec<String> = shown
        .sections
        .iter()
        .flat_map(|s| s.answers.iter().map(|a| a.answer.clone()))
        .collect();
    story.check(
        texts.iter().any(|t| t.contains("opdrachten in stapjes"))
            && !texts.iter().any(|t| t.contains("Huiswerkbegeleiding")),
        "the answers arrived word for word, and the unconsented section did not",
    );
    story.check(
        shown.item.as_ref().is_some_and(|i| i.status == "gelezen"),
        "the first view marks it read (gelezen), and is logged",
    );

    story.step(
        7,
        &format!("Sam adds to his passport; the consultant at {GEMEENTE} fetches it and sees only what Sam shared with the municipality."),
    );
    let mut gm = region.api(GEMEENTE).await?;
    story.check(
        gm.inbox(InboxRequest {})
            .await?
            .into_inner()
            .items
            .is_empty(),
        &format!("{GEMEENTE} holds no passport yet"),
    );
    let mut sam_v2: Answers = serde_json::from_str(SAM_ANSWERS)?;
    sam_v2.entry("wat-heb-ik-nodig".into()).or_default().insert(
        "helpt-mij".into(),
        serde_json::from_value(serde_json::json!(
            "Een vaste begeleider, en een rustige plek om te werken."
        ))?,
    );
    let v = sign_passport(
        &mut school,
        &sam,
        &draft_from_answers("pvs-mbo-v1", &sam_v2)?,
        None,
        now(),
    )
    .await?;
    story.check(
        v == 2,
        "Sam's version 2 is signed at the school; nobody sends it",
    );
    let may = gm.fetchable(FetchableRequest {}).await?.into_inner().grants;
    story.check(
        may.iter().any(|g| g.grant_id == g_sam_gm),
        &format!("{GEMEENTE} holds the school's notice that it may fetch (no answers in it)"),
    );
    gm.fetch_passport(FetchPassportRequest {
        grant_id: g_sam_gm.clone(),
        staff_user: "consulent.bakker".into(),
    })
    .await
    .map_err(explain)?;
    let fetched = wait_until(Duration::from_secs(20), || {
        let mut gm = gm.clone();
        let g = g_sam_gm.clone();
        async move {
            gm.show_passport(ShowPassportRequest {
                grant_id: g,
                staff_user: "consulent.bakker".into(),
            })
            .await
            .is_ok_and(|p| p.into_inner().version == 2)
        }
    })
    .await;
    story.check(
        fetched,
        &format!("{GEMEENTE} asked, and the school answered on its own with version 2, which it never sent"),
    );

    let inbox = gm.inbox(InboxRequest {}).await?.into_inner().items;
    story.check(
        inbox.len() == 1 && inbox[0].purpose == "begeleiding",
        "one passport, for purpose begeleiding",
    );
    let shown_gm = gm
        .show_passport(ShowPassportRequest {
            grant_id: g_sam_gm.clone(),
            staff_user: "consulent.bakker".into(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let ids: Vec<_> = shown_gm
        .sections
        .iter()
        .map(|s| s.section_id.clone())
        .collect();
    story.check(
        ids == sam_gm_sections,
        &format!("{GEMEENTE} holds only {}", sam_gm_sections.join(" and ")),
    );
    let denied = gm
        .show_passport(ShowPassportRequest {
            grant_id: g_sam_mbo.clone(),
            staff_user: "consulent.bakker".into(),
        })
        .await;
    story.check(
        denied.is_err_and(|s| s.code() == tonic::Code::NotFound),
        "the mbo's grant gives the municipality nothing",
    );

    story.step(
        8,
        &format!("{OTHER_MBO}, without any consent, receives nothing."),
    );
    let mut other = region.api(OTHER_MBO).await?;
    let s = other.status(NodeStatusRequest {}).await?.into_inner();
    story.check(
        s.inbox_count == 0,
        &format!("{OTHER_MBO} holds no passport"),
    );
    let noor_at_mbo = mbo.inbox(InboxRequest {}).await?.into_inner().items;
    story.check(
        noor_at_mbo
            .iter()
            .any(|i| i.grant_id == g_noor_mbo && i.sections.len() == 5),
        "Noor's whole passport reached the mbo, with her guardian's consent",
    );

    story.step(
        9,
        "The mbo plans Sam's intake; the school sees how its handovers go.",
    );
    mbo.set_status(overstap_proto::pb::SetStatusRequest {
        grant_id: g_sam_mbo.clone(),
        status: "intake gepland".into(),
        staff_user: "intake.jansen".into(),
    })
    .await
    .map_err(explain)?;
    let seen = wait_until(Duration::from_secs(20), || async {
        handovers(&mut school.clone())
            .await
            .iter()
            .any(|h| h.grant_id == g_sam_mbo && h.status == "intake gepland")
    })
    .await;
    let list = handovers(&mut school).await;
    for line in render::handovers(&list, now()).lines() {
        story.say(&format!("   | {line}"));
    }
    story.check(
        seen,
        "the mbo's status travelled back to the school, with the views",
    );

    story.step(
        10,
        &format!("Sam withdraws the consent he gave {GEMEENTE}."),
    );
    let revoked_at = Instant::now();
    overstap_region::passport::revoke(
        &mut school,
        overstap_region::passport::make_revocation(&sam, &g_sam_gm, None, now())?,
    )
    .await?;
    let erased = wait_until(Duration::from_secs(30), || async {
        handovers(&mut school.clone())
            .await
            .iter()
            .any(|h| h.grant_id == g_sam_gm && h.grant_state == "erased")
    })
    .await;
    let delay = revoked_at.elapsed();
    story.check(
        erased,
        &format!(
            "{GEMEENTE} erased it and its signed deletion receipt was back in {} ms",
            delay.as_millis()
        ),
    );
    let gm_left = gm.inbox(InboxRequest {}).await?.into_inner().items;
    story.check(
        gm_left.is_empty(),
        &format!("{GEMEENTE} holds nothing of Sam any more"),
    );

    story.step(11, "Sam asks where his passport went and who looked at it.");
    let events = school
        .trail(overstap_proto::pb::TrailRequest {
            pseudonym: sam.pseudonym.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .events;
    for line in render::trail(&sam.pseudonym, &events).lines() {
        story.say(&format!("   | {line}"));
    }
    let with_receipt: Vec<_> = events.iter().filter(|e| e.hub_receipt.is_some()).collect();
    story.check(
        !with_receipt.is_empty() && with_receipt.iter().all(|e| e.receipt_verified),
        &format!(
            "all {} events carried by the hub check out against its signed receipts",
            with_receipt.len()
        ),
    );
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    story.check(
        [
            "consent",
            "sent",
            "delivered",
            "viewed",
            "status",
            "revoked",
            "erased",
        ]
        .iter()
        .all(|n| names.contains(n)),
        "the trail shows consent, sending, delivery, views, status, revocation and erasure",
    );

    story.step(12, "The hub routed everything, and could read none of it.");
    let hub = overstap_region::region::hub_contents(&region.dir).await?;
    let mut leaked: Vec<String> = answer_texts(SAM_ANSWERS)
        .into_iter()
        .chain(answer_texts(NOOR_ANSWERS))
        .filter(|t| contains(&hub, t))
        .collect();
    for sec in &sam_draft.sections {
        if contains(&hub, &sec.title) {
            leaked.push(sec.title.clone());
        }
    }
    for p in [&sam.pseudonym, &noor.pseudonym] {
        if contains(&hub, p) {
            leaked.push(p.clone());
        }
    }
    story.check(
        !hub.is_empty() && leaked.is_empty(),
        &format!(
            "the hub's database ({} bytes) holds no answer, section heading or pseudonym",
            hub.len()
        ),
    );

    story.step(
        13,
        "Every school and college can check the hub's log for itself.",
    );
    for org in [SCHOOL, MBO] {
        let mut api = region.api(org).await?;
        let proven = wait_until(Duration::from_secs(20), || {
            let mut api = api.clone();
            async move {
                api.log_status(overstap_proto::pb::LogStatusRequest {})
                    .await
                    .map(|s| s.into_inner())
                    .is_ok_and(|s| s.unproven == 0 && s.proven > 0 && !s.alarm)
            }
        })
        .await;
        let s = api
            .log_status(overstap_proto::pb::LogStatusRequest {})
            .await?
            .into_inner();
        story.check(
            proven,
            &format!(
                "{org} proved all {} of its envelopes are in the hub's signed log",
                s.proven
            ),
        );
        let audit = crate::audit::audit(&region.node_dir(org)).await?;
        story.check(
            audit.ok(),
            &format!(
                "{org}'s audit rebuilt the tree from all {} entries; it makes both the checkpoint {org} verified and the hub's newest",
                audit.entries
            ),
        );
    }

    let passed = story.passed;
    let failed = story.failed.clone();
    story.say(&format!(
        "\n{} checks passed, {} failed, in {:.1} s.",
        passed,
        failed.len(),
        started.elapsed().as_secs_f64()
    ));
    if !failed.is_empty() {
        region.shutdown().await?;
        bail!("the demo failed: {}", failed.join("; "));
    }
    if serve {
        story.say("\nThe region keeps running. In another terminal, point the CLI at a node, for example:");
        story.say(&format!(
            "   export OVERSTAP_NODE_DIR={}",
            region.node_dir(MBO).display()
        ));
        story.say(&format!(
            "   overstap inbox\n   overstap inbox --show {g_sam_mbo} --staff intake.jansen"
        ));
        story.say(&format!(
            "   OVERSTAP_NODE_DIR={} overstap outbox",
            region.node_dir(SCHOOL).display()
        ));
        region
            .admit_and_start(Org::new(
                COORDINATOR,
                MemberKind::Coordinator,
                "RMC Regio Zwolle",
            ))
            .await?;
        let token = region.authority.dashboard_token(COORDINATOR, 12)?;
        story.say(&format!(
            "The coordinators' dashboard, signed in as {COORDINATOR} for 12 hours (your browser will warn that it does not know the region's own CA):"
        ));
        story.say(&format!("   {}#token={token}", region.dashboard_url()?));
        story.say(&format!(
            "The same numbers on the command line:\n   OVERSTAP_NODE_DIR={} overstap stats --by kind",
            region.node_dir(COORDINATOR).display()
        ));
        // The school's web app, with a mentor's and a decaan's account to try it with, and the
        // college's, with an intaker's (one password for the three).
        let password = overstap_node::web::random_token();
        for (org, user, role, name) in [
            (SCHOOL, "mentor", "mentor", "Meneer De Vries"),
            (SCHOOL, "decaan", "decaan", "Mevrouw Smit"),
            (MBO, "intake.jansen", "intaker", "Ilse Jansen"),
        ] {
            region
                .api(org)
                .await?
                .add_staff(overstap_proto::pb::AddStaffRequest {
                    username: user.into(),
                    password: password.clone(),
                    role: role.into(),
                    display_name: name.into(),
                })
                .await
                .map_err(explain)?;
        }
        let web = std::fs::read_to_string(region.node_dir(SCHOOL).join("web.url"))?;
        let web = web.trim();
        let college = std::fs::read_to_string(region.node_dir(MBO).join("web.url"))?;
        story.say(&format!(
            "The college's web app, where an intaker reads what arrived and plans the intake:\n   {}\n   sign in as intake.jansen, password {password}",
            college.trim()
        ));
        story.say(&format!(
            "The school's web app, where a mentor invites a student and the student's own browser makes the key:\n   {web}\n   the mentor: sign in as mentor; the decaan (every handover of the school): as decaan; password {password}"
        ));
        // Two students already invited: one of 15, whose parent joins, and one of 17.
        for (name, class, age) in [("Noor Bakker", "3A", 15), ("Daan Visser", "4B", 17)] {
            let invited = region
                .api(SCHOOL)
                .await?
                .invite_student(overstap_proto::pb::InviteStudentRequest {
                    name: name.into(),
                    class_name: class.into(),
                    birth_month: overstap_region::cast::birth_month(age),
                    mentor: "mentor".into(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            story.say(&format!("   {name} ({age}): {web}{}", invited.student_path));
            if !invited.parent_path.is_empty() {
                story.say(&format!(
                    "   a parent of {name}: {web}{}",
                    invited.parent_path
                ));
            }
        }
        story.say("   Open each link in a browser of its own (another browser, or a private window): each person's browser makes their own key, and the mentor compares the codes.");
        story.say("Prometheus metrics (plain HTTP, loopback only):");
        for part in ["hub", SCHOOL, MBO] {
            if let Ok(url) = region.metrics_url(part) {
                story.say(&format!("   {part}: {url}"));
            }
        }
        story.say("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    region.shutdown().await?;
    Ok(passed)
}
