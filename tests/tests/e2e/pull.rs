//! Recipients pull: a college the student let fetch learns so from the school's notice, asks,
//! and gets the passport (the newest version of a live grant) without anyone at the school
//! acting; and every pull the school may not serve gets one and the same refusal.

use overstap_proto::passport::build_version;
use overstap_proto::pb::{
    FetchPassportRequest, FetchableGrant, FetchableRequest, StorePassportRequest, TrailRequest,
};
use overstap_proto::sign::{Domain, sign_message};
use overstap_region::passport::{
    Answers, draft_from_answers, make_revocation, revoke, to_sections,
};
use overstap_region::wallet::Wallet;
use overstap_tests::cast::{GEMEENTE, MBO, SCHOOL};
use overstap_tests::*;

async fn fetchable(region: &overstap_region::Region, org: &str) -> Vec<FetchableGrant> {
    region
        .api(org)
        .await
        .unwrap()
        .fetchable(FetchableRequest {})
        .await
        .unwrap()
        .into_inner()
        .grants
}

async fn fetch(
    region: &overstap_region::Region,
    org: &str,
    grant_id: &str,
) -> Result<String, tonic::Status> {
    region
        .api(org)
        .await
        .unwrap()
        .fetch_passport(FetchPassportRequest {
            grant_id: grant_id.into(),
            staff_user: "intake.jansen".into(),
        })
        .await
        .map(|r| r.into_inner().home_org)
}

/// Runs the `overstap` CLI against the college's node; what it printed.
async fn overstap(region: &overstap_region::Region, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_overstap-under-test"))
        .args(args)
        .arg("--node-dir")
        .arg(region.node_dir(MBO))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "overstap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn received_version(region: &overstap_region::Region, org: &str, grant_id: &str) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT version FROM received WHERE grant_id = $1")
        .bind(grant_id)
        .fetch_optional(&node_pool(region, org).await)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Signs and stores version `n` of the student's passport at the school, "over-mij" changed.
async fn store_version(region: &overstap_region::Region, w: &Wallet, n: u32, about_me: &str) {
    let mut answers: Answers = serde_json::from_str(cast::SAM_ANSWERS).unwrap();
    answers.get_mut("wie-ben-ik").unwrap().insert(
        "over-mij".into(),
        serde_json::from_value(serde_json::json!(about_me)).unwrap(),
    );
    let draft = draft_from_answers("pvs-mbo-v1", &answers).unwrap();
    let version =
        build_version(&w.pseudonym, n, "pvs-mbo-v1", now(), &to_sections(&draft)).unwrap();
    region
        .api(SCHOOL)
        .await
        .unwrap()
        .store_passport(StorePassportRequest {
            manifest: Some(sign_message(Domain::Manifest, &version.manifest, &[&w.key])),
            sections: version.disclosures,
        })
        .await
        .unwrap();
}

async fn trail_events(region: &overstap_region::Region, pseudonym: &str) -> Vec<String> {
    region
        .api(SCHOOL)
        .await
        .unwrap()
        .trail(TrailRequest {
            pseudonym: pseudonym.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| format!("{} {}", e.event, e.detail))
        .collect()
}

#[tokio::test]
async fn a_college_fetches_what_the_student_let_it_fetch_without_the_school_sending() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &cast::birth_month(17), None).await;
    let mut req = grant_request(MBO, &["wie-ben-ik"], "intake", 30);
    req.live = true;
    req.may_fetch = true;
    let grant_id = grant(&region, &sam.wallet, &req, None).await;

    // The school's notice: the college may fetch; it holds the grant, and no passport.
    eventually("the college hears it may fetch", || async {
        fetchable(&region, MBO).await.len() == 1
    })
    .await;
    let notice = &fetchable(&region, MBO).await[0];
    assert_eq!(notice.grant_id, grant_id);
    assert_eq!(notice.from_org, SCHOOL);
    assert_eq!(notice.sections, ["wie-ben-ik"]);
    assert_eq!(notice.asked_at, 0);
    assert_eq!(node_count(&region, MBO, "received").await, 0);
    assert_eq!(node_count(&region, MBO, "received_sections").await, 0);

    // The college asks; the school answers on its own with exactly the consented part.
    assert_eq!(fetch(&region, MBO, &grant_id).await.unwrap(), SCHOOL);
    eventually("the fetched passport is at the college", || async {
        held_sections(&region, MBO, &grant_id).await == ["wie-ben-ik"]
    })
    .await;
    assert_eq!(received_version(&region, MBO, &grant_id).await, 1);
    // The school's handovers say the college fetched it (and when).
    assert!(handover(&region, &grant_id).await.unwrap().fetched_at > 0);
    eventually("the school's trail shows the fetch", || async {
        trail_events(&region, &sam.wallet.pseudonym)
            .await
            .iter()
            .any(|e| e == &format!("fetched {MBO} fetched version 1"))
    })
    .await;

    region
        .api(MBO)
        .await
        .unwrap()
        .set_status(overstap_proto::pb::SetStatusRequest {
            grant_id: grant_id.clone(),
            status: "intake gepland".into(),
            staff_user: "intake.jansen".into(),
        })
        .await
        .unwrap();
    eventually("the school hears of the intake", || async {
        handover(&region, &grant_id)
            .await
            .is_some_and(|h| h.status == "intake gepland")
    })
    .await;

    // Sam updates the passport; the school sends nothing; the college fetches version 2.
    store_version(
        &region,
        &sam.wallet,
        2,
        "Ik ben Sam, en nu ook stagiair bij een garage.",
    )
    .await;
    // This time as a person at the college does it, with the CLI: the list, then the request.
    let listed = overstap(&region, &["pull", "--format", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["grant_id"], grant_id.as_str());
    assert!(listed[0]["asked_at"].as_i64().unwrap() > 0);
    let said = overstap(
        &region,
        &["pull", "--grant", &grant_id, "--staff", "intake.jansen"],
    )
    .await;
    assert!(
        said.contains(&format!("Asked {SCHOOL} for the passport under {grant_id}")),
        "{said}"
    );
    eventually("the college holds the newest version", || async {
        received_version(&region, MBO, &grant_id).await == 2
    })
    .await;
    // The intake the college planned before stays planned, there and at the school.
    let status_at_college =
        sqlx::query_scalar::<_, String>("SELECT status FROM received WHERE grant_id = $1")
            .bind(&grant_id)
            .fetch_one(&node_pool(&region, MBO).await)
            .await
            .unwrap();
    assert_eq!(status_at_college, "intake gepland");
    eventually("the school hears of version 2", || async {
        trail_events(&region, &sam.wallet.pseudonym)
            .await
            .iter()
            .any(|e| e == &format!("delivered {MBO} received version 2 and checked it"))
    })
    .await;
    assert_eq!(
        handover(&region, &grant_id).await.unwrap().status,
        "intake gepland"
    );
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM staff_audit WHERE who = 'intake.jansen'")
            .fetch_all(&node_pool(&region, MBO).await)
            .await
            .unwrap();
    assert_eq!(audit, ["pull", "status", "pull"]);

    // A grant the student did not make live stops at the version consented to.
    let mut fixed = grant_request(MBO, &["wie-ben-ik"], "begeleiding", 30);
    fixed.may_fetch = true;
    let fixed_id = grant(&region, &sam.wallet, &fixed, None).await;
    eventually("the second notice", || async {
        fetchable(&region, MBO).await.len() == 2
    })
    .await;
    store_version(&region, &sam.wallet, 3, "Versie drie.").await;
    fetch(&region, MBO, &fixed_id).await.unwrap();
    eventually("the fixed grant's passport is at the college", || async {
        received_version(&region, MBO, &fixed_id).await > 0
    })
    .await;
    assert_eq!(received_version(&region, MBO, &fixed_id).await, 2);

    // Withdrawn: the college's notice goes with the passport.
    let mut school = region.api(SCHOOL).await.unwrap();
    revoke(
        &mut school,
        make_revocation(&sam.wallet, &grant_id, None, now()).unwrap(),
    )
    .await
    .unwrap();
    eventually("the notice and the passport are gone", || async {
        fetchable(&region, MBO).await.len() == 1
            && received_version(&region, MBO, &grant_id).await == 0
    })
    .await;
    let gone = fetch(&region, MBO, &grant_id).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_pull_the_school_may_not_serve_gets_the_same_refusal_and_nothing() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &cast::birth_month(17), None).await;
    let mut to_mbo = grant_request(MBO, &["wie-ben-ik"], "intake", 30);
    to_mbo.may_fetch = true;
    let fetch_id = grant(&region, &sam.wallet, &to_mbo, None).await;
    let send_only = grant(
        &region,
        &sam.wallet,
        &grant_request(GEMEENTE, &["wie-ben-ik"], "werk", 30),
        None,
    )
    .await;
    let mut to_gemeente = grant_request(GEMEENTE, &["wat-kan-ik"], "werk", 30);
    to_gemeente.may_fetch = true;
    let gm_id = grant(&region, &sam.wallet, &to_gemeente, None).await;
    eventually("both notices arrive", || async {
        fetchable(&region, MBO).await.len() == 1 && fetchable(&region, GEMEENTE).await.len() == 1
    })
    .await;
    // No notice for the grant the student did not let them fetch.
    assert_eq!(fetchable(&region, GEMEENTE).await[0].grant_id, gm_id);
    let packages_before = school_packages(&region).await;

    // What a dishonest or confused member asks for, through its own node: a notice row made by
    // hand, so the node seals a real pull request for it.
    let mut answers = Vec::new();
    for (org, grant, copy_of, purpose) in [
        // another member's grant
        (GEMEENTE, fetch_id.as_str(), gm_id.as_str(), "intake"),
        // a grant the student did not let it fetch
        (GEMEENTE, send_only.as_str(), gm_id.as_str(), "werk"),
        // a grant that does not exist
        (MBO, "g-made-up", fetch_id.as_str(), "intake"),
    ] {
        forge(&region, org, grant, copy_of, purpose).await;
        fetch(&region, org, grant).await.unwrap();
        answers.push(refusal(&region, org, grant).await);
    }
    // Its own grant, for another purpose than the grant's.
    set_purpose(&region, &fetch_id, "werk").await;
    fetch(&region, MBO, &fetch_id).await.unwrap();
    answers.push(refusal(&region, MBO, &fetch_id).await);
    set_purpose(&region, &fetch_id, "intake").await;

    // After Sam withdrew, with the notice it kept a copy of.
    forge(&region, MBO, "g-kept", &fetch_id, "intake").await;
    let mut school = region.api(SCHOOL).await.unwrap();
    revoke(
        &mut school,
        make_revocation(&sam.wallet, &fetch_id, None, now()).unwrap(),
    )
    .await
    .unwrap();
    eventually("the college drops its notice", || async {
        fetchable(&region, MBO)
            .await
            .iter()
            .all(|f| f.grant_id != fetch_id)
    })
    .await;
    sqlx::query("UPDATE fetchable SET grant_id = $1, refused = NULL WHERE grant_id = 'g-kept'")
        .bind(&fetch_id)
        .execute(&node_pool(&region, MBO).await)
        .await
        .unwrap();
    fetch(&region, MBO, &fetch_id).await.unwrap();
    answers.push(refusal(&region, MBO, &fetch_id).await);

    // One refusal for all, which names nothing; and nothing was sent.
    assert_eq!(answers.len(), 5);
    for a in &answers {
        assert_eq!(a, overstap_node::core::PULL_REFUSED);
    }
    assert_eq!(school_packages(&region).await, packages_before);
    assert_eq!(node_count(&region, GEMEENTE, "received").await, 0);
    assert_eq!(node_count(&region, MBO, "received").await, 0);
    region.shutdown().await.unwrap();
}

/// A notice row at `org` for `grant`, copied from its row for `copy_of`, with `purpose`.
async fn forge(
    region: &overstap_region::Region,
    org: &str,
    grant: &str,
    copy_of: &str,
    purpose: &str,
) {
    let made = sqlx::query(
        "INSERT INTO fetchable (grant_id, from_org, pseudonym, purpose, sections, not_before, \
         not_after, card, grant_signed, noticed_at) SELECT $1, from_org, pseudonym, $2, sections, \
         not_before, not_after, card, grant_signed, noticed_at FROM fetchable WHERE grant_id = $3",
    )
    .bind(grant)
    .bind(purpose)
    .bind(copy_of)
    .execute(&node_pool(region, org).await)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(made, 1, "{org} holds a notice for {copy_of}");
}

async fn set_purpose(region: &overstap_region::Region, grant: &str, purpose: &str) {
    sqlx::query("UPDATE fetchable SET purpose = $1 WHERE grant_id = $2")
        .bind(purpose)
        .bind(grant)
        .execute(&node_pool(region, MBO).await)
        .await
        .unwrap();
}

/// The school's answer to `org`'s pull under `grant`, once it is back.
async fn refusal(region: &overstap_region::Region, org: &str, grant: &str) -> String {
    let answered = || async {
        fetchable(region, org)
            .await
            .into_iter()
            .find(|f| f.grant_id == grant && !f.refused.is_empty())
    };
    eventually("the school's refusal", || async {
        answered().await.is_some()
    })
    .await;
    answered().await.unwrap().refused
}

/// The packages the school has sealed.
async fn school_packages(region: &overstap_region::Region) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE kind = 1")
        .fetch_one(&node_pool(region, SCHOOL).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pull_asked_while_the_school_is_offline_is_answered_once_it_is_back_and_stored_once() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &cast::birth_month(17), None).await;
    let mut req = grant_request(MBO, &["wie-ben-ik"], "intake", 30);
    req.may_fetch = true;
    let grant_id = grant(&region, &sam.wallet, &req, None).await;
    eventually("the notice", || async {
        fetchable(&region, MBO).await.len() == 1
    })
    .await;
    region.stop_node(SCHOOL).await.unwrap();
    fetch(&region, MBO, &grant_id).await.unwrap();
    // The request waits in the school's mailbox at the hub; the college stops before any
    // answer, and both come back.
    eventually("the request is at the hub", || async {
        hub_mailbox(&region, SCHOOL).await.len() == 1
    })
    .await;
    region.stop_node(MBO).await.unwrap();
    region.start_node(SCHOOL).await.unwrap();
    region.start_node(MBO).await.unwrap();
    eventually("the passport is at the college", || async {
        received_version(&region, MBO, &grant_id).await == 1
    })
    .await;
    // Once: one package sealed, one passport held, one fetch in the trail.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(school_packages(&region).await, 1);
    assert_eq!(node_count(&region, MBO, "received").await, 1);
    let fetched = trail_events(&region, &sam.wallet.pseudonym)
        .await
        .into_iter()
        .filter(|e| e.starts_with("fetched"))
        .count();
    assert_eq!(fetched, 1);
    region.shutdown().await.unwrap();
}

/// Redeems `code` at `org`; the pull request's envelope id.
async fn redeem(region: &overstap_region::Region, org: &str, code: &str) -> Vec<u8> {
    region
        .api(org)
        .await
        .unwrap()
        .redeem_pickup_code(overstap_proto::pb::RedeemPickupCodeRequest {
            code: code.into(),
            staff_user: "intake.jansen".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope_id
}

/// The school's refusal of the code pull in `envelope`, once it is back.
async fn code_refusal(region: &overstap_region::Region, org: &str, envelope: &[u8]) -> String {
    let pool = node_pool(region, org).await;
    let answered = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT refused FROM code_pulls WHERE envelope_id = $1",
        )
        .bind(envelope)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    eventually("the school's refusal", || async {
        answered().await.is_some()
    })
    .await;
    answered().await.unwrap()
}

async fn add_code(
    region: &overstap_region::Region,
    signed: overstap_proto::pb::Signed,
) -> Result<(), tonic::Status> {
    region
        .api(SCHOOL)
        .await
        .unwrap()
        .add_pickup_code(overstap_proto::pb::AddPickupCodeRequest { code: Some(signed) })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_pickup_code_fetches_once_for_its_recipient_and_wrong_codes_pause_the_guesser() {
    use overstap_region::passport::make_pickup_code;
    let (_tmp, region) = region().await;
    let sam = student(&region, &cast::birth_month(17), None).await;
    // Sam chose "the school sends it": the college holds no notice, only Sam's code.
    let grant_id = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    let gm_grant = grant(
        &region,
        &sam.wallet,
        &grant_request(GEMEENTE, &["wat-kan-ik"], "werk", 30),
        None,
    )
    .await;

    // What the school will not keep: a code signed by someone else, one for another student's
    // grant, one that lives two hours.
    let (_, genuine) = make_pickup_code(&sam.wallet, &grant_id, 15, now()).unwrap();
    let body: overstap_proto::pb::PickupCode =
        overstap_proto::sign::decode_body(Domain::PickupCode, &genuine).unwrap();
    let forged = sign_message(
        Domain::PickupCode,
        &body,
        &[&overstap_proto::sign::generate_signing_key()],
    );
    let e = add_code(&region, forged).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("missing signature on pickup code"),
        "{e:?}"
    );
    let (_, two_hours) = make_pickup_code(&sam.wallet, &grant_id, 60, now() - 3600).unwrap();
    let late = add_code(&region, two_hours).await.unwrap_err();
    assert!(
        late.message()
            .contains("at most 60 minutes after it was made"),
        "{late:?}"
    );
    let noor = student(&region, &cast::birth_month(17), None).await;
    let (_, for_another) = make_pickup_code(&noor.wallet, &grant_id, 15, now()).unwrap();
    let other = add_code(&region, for_another).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound, "{other:?}");
    assert_eq!(node_count(&region, SCHOOL, "pickup_codes").await, 0);

    let (shown, signed) = make_pickup_code(&sam.wallet, &grant_id, 15, now()).unwrap();
    add_code(&region, signed).await.unwrap();
    assert!(shown.starts_with(&format!("{SCHOOL}-")), "{shown}");

    // The municipality brings Sam's code for the college: refused, and the code still works.
    let wrong_member = redeem(&region, GEMEENTE, &shown).await;
    assert_eq!(
        code_refusal(&region, GEMEENTE, &wrong_member).await,
        overstap_node::core::PULL_REFUSED
    );
    // The college, typing it as people do: fetched, once.
    redeem(&region, MBO, &shown.to_lowercase().replace('-', " ")).await;
    eventually("the passport is at the college", || async {
        held_sections(&region, MBO, &grant_id).await == ["wie-ben-ik"]
    })
    .await;
    assert!(
        trail_events(&region, &sam.wallet.pseudonym)
            .await
            .contains(&format!(
                "fetched {MBO} fetched version 1 with your pickup code"
            ))
    );
    let again = redeem(&region, MBO, &shown).await;
    assert_eq!(
        code_refusal(&region, MBO, &again).await,
        overstap_node::core::PULL_REFUSED
    );

    // A code that ran out.
    let (short, signed) = make_pickup_code(&sam.wallet, &grant_id, 1, now() - 57).unwrap();
    add_code(&region, signed).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let expired = redeem(&region, MBO, &short).await;
    assert_eq!(
        code_refusal(&region, MBO, &expired).await,
        overstap_node::core::PULL_REFUSED
    );

    // Guessing: the municipality's wrong codes (one above, four more) pause its codes, so its
    // own good code is refused too.
    let (good, signed) = make_pickup_code(&sam.wallet, &gm_grant, 15, now()).unwrap();
    add_code(&region, signed).await.unwrap();
    for guess in ["2222-2222", "3333-3333", "4444-4444", "5555-5555"] {
        let e = redeem(&region, GEMEENTE, &format!("{SCHOOL}-{guess}")).await;
        code_refusal(&region, GEMEENTE, &e).await;
    }
    let paused = redeem(&region, GEMEENTE, &good).await;
    assert_eq!(
        code_refusal(&region, GEMEENTE, &paused).await,
        overstap_node::core::PULL_REFUSED
    );
    assert_eq!(node_count(&region, GEMEENTE, "received").await, 0);
    assert_eq!(node_count(&region, MBO, "received").await, 1);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_grant_that_ran_out_lets_nobody_fetch_and_its_notice_goes() {
    let (_tmp, region, clock) = region_with_clock().await;
    let sam = student(&region, &cast::birth_month(17), None).await;
    let mut req = grant_request(MBO, &["wie-ben-ik"], "intake", 1);
    req.may_fetch = true;
    let grant_id = grant(&region, &sam.wallet, &req, None).await;
    eventually("the notice", || async {
        fetchable(&region, MBO).await.len() == 1
    })
    .await;
    // A day and a bit later the college's reaper drops the notice, and the college's own node
    // will not ask.
    clock.advance(2 * 86_400);
    eventually("the notice is dropped", || async {
        fetchable(&region, MBO).await.is_empty()
    })
    .await;
    let gone = fetch(&region, MBO, &grant_id).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    // A college that kept a copy of the notice (and moved its end) still gets the refusal.
    sqlx::query(
        "INSERT INTO fetchable (grant_id, from_org, pseudonym, purpose, sections, not_before, \
         not_after, card, grant_signed, noticed_at) VALUES ($1, $2, $3, 'intake', 'wie-ben-ik', 0, $4, $5, $5, 0)",
    )
    .bind(&grant_id)
    .bind(SCHOOL)
    .bind(&sam.wallet.pseudonym)
    .bind(clock.now() + 86_400)
    .bind(Vec::<u8>::new())
    .execute(&node_pool(&region, MBO).await)
    .await
    .unwrap();
    fetch(&region, MBO, &grant_id).await.unwrap();
    assert_eq!(
        refusal(&region, MBO, &grant_id).await,
        overstap_node::core::PULL_REFUSED
    );
    assert_eq!(node_count(&region, MBO, "received").await, 0);
    region.shutdown().await.unwrap();
}

/// A member that floods the school with pulls (150 of them, through its own node, under a hub
/// limit of 40 calls a second per member): the school's honest push to another college and that
/// college's own pull both go through, and every flooding pull gets its one refusal.
#[tokio::test]
async fn a_flood_of_pulls_from_one_member_meets_the_hubs_limits_and_honest_handovers_go_on() {
    let (_tmp, mut region) = region().await;
    region
        .set_hub_limits(overstap_hub::limits::Limits {
            requests_per_second: 40,
            ..Default::default()
        })
        .await
        .unwrap();
    let sam = student(&region, &cast::birth_month(17), None).await;
    let mut to_gemeente = grant_request(GEMEENTE, &["wat-kan-ik"], "werk", 30);
    to_gemeente.may_fetch = true;
    let gm_id = grant(&region, &sam.wallet, &to_gemeente, None).await;
    let mut to_mbo = grant_request(MBO, &["wie-ben-ik"], "intake", 30);
    to_mbo.may_fetch = true;
    let mbo_id = grant(&region, &sam.wallet, &to_mbo, None).await;
    eventually("the notices", || async {
        fetchable(&region, GEMEENTE).await.len() == 1 && fetchable(&region, MBO).await.len() == 1
    })
    .await;
    const FLOOD: usize = 150;
    for i in 0..FLOOD {
        forge(&region, GEMEENTE, &format!("g-flood-{i}"), &gm_id, "werk").await;
        fetch(&region, GEMEENTE, &format!("g-flood-{i}"))
            .await
            .unwrap();
    }
    // Meanwhile: the school pushes to the college, and the college pulls.
    let pushed = hand_over(&region, MBO).await;
    fetch(&region, MBO, &mbo_id).await.unwrap();
    eventually("the honest push and pull arrive", || async {
        !held_sections(&region, MBO, &pushed).await.is_empty()
            && received_version(&region, MBO, &mbo_id).await == 1
    })
    .await;
    // In the end every flooding pull was answered with the one refusal and nothing else. (The
    // member's node sends its pulls in batches of up to 64 envelopes a call, so its calls may
    // stay under the hub's limit; the hub's rate-limit refusals are printed, not asserted.)
    let metrics = scrape(&region.metrics_url("hub").unwrap()).await;
    let limited: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("overstap_hub_rejections") && k.contains("rate_limited"))
        .map(|(_, v)| v)
        .sum();
    let refused = || async {
        fetchable(&region, GEMEENTE)
            .await
            .iter()
            .filter(|f| f.refused == overstap_node::core::PULL_REFUSED)
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while refused().await < FLOOD {
        let n = refused().await;
        assert!(
            std::time::Instant::now() < deadline,
            "{n} of {FLOOD} flooding pulls refused after two minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(node_count(&region, GEMEENTE, "received").await, 0);
    println!("hub rate-limit refusals while the member flooded: {limited}");
    region.shutdown().await.unwrap();
}
