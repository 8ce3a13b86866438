//! The receiving side in a browser's requests: an intaker at the college finds a passport by the
//! student's name, reads it (logged, seen at the school), plans the intake (the status travels
//! back to the school's handovers page), and after the student withdraws consent reads the
//! erasure instead; who may open which page; the admin's audit.

use overstap_proto::sign::Domain;
use overstap_region::passport::{make_revocation, revoke};
use overstap_tests::cast::{MBO, SCHOOL};
use overstap_tests::*;

use crate::web::{PASSWORD, add_staff_at, csrf_of, session_cookie, sign_in_staff};

/// Signs `user` in at `base`; their session cookie.
async fn signed_in(base: &str, user: &str) -> String {
    let answer = sign_in_staff(base, user, PASSWORD).await;
    assert_eq!(answer.status, 303, "{answer:?}");
    session_cookie(&answer)
}

async fn get(base: &str, path: &str, cookie: &str) -> HttpAnswer {
    http(base, "GET", path, &[("Cookie", cookie)], b"").await
}

async fn post_form(base: &str, path: &str, cookie: &str, form: &str) -> HttpAnswer {
    http(
        base,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
        form.as_bytes(),
    )
    .await
}

async fn received_status(region: &overstap_region::Region, grant_id: &str) -> String {
    sqlx::query_scalar::<_, String>("SELECT status FROM received WHERE grant_id = $1")
        .bind(grant_id)
        .fetch_one(&node_pool(region, MBO).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_intaker_finds_reads_and_plans_a_passport_and_the_school_sees_it_until_it_is_erased() {
    let (_tmp, region) = region().await;
    add_staff_at(&region, MBO, "intake.jansen", "intaker").await;
    add_staff_at(&region, MBO, "mentor.mbo", "mentor").await;
    add_staff_at(&region, MBO, "beheer", "admin").await;
    add_staff_at(&region, MBO, "consulent.de.jong", "consultant").await;
    add_staff_at(&region, SCHOOL, "decaan.smit", "decaan").await;
    let college = web_url(&region, MBO);
    let school = web_url(&region, SCHOOL);

    // Sam shares their name and "Wie ben ik?" with the college for the intake.
    let sam = student_named(&region, &cast::birth_month(17), "Sam de Boer").await;
    let grant_id = grant_on(
        &region,
        &sam.wallet,
        "pvs-mbo-v2",
        &grant_request(MBO, &["personalia", "wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &grant_id).await;
    eventually("the passport is at the college", || async {
        node_count(&region, MBO, "received").await == 1
    })
    .await;

    // The intaker finds it by name, and only by a name that matches.
    let intaker = signed_in(&college, "intake.jansen").await;
    let list = get(&college, "/inbox?q=sam", &intaker).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert!(list.body.contains("Sam de Boer"), "{}", list.body);
    assert!(list.body.contains("1 paspoort gevonden"), "{}", list.body);
    let none = get(&college, "/inbox?q=noor", &intaker).await;
    assert!(none.body.contains("0 paspoorten gevonden"), "{}", none.body);
    let other_purpose = get(&college, "/inbox?purpose=werk", &intaker).await;
    assert!(!other_purpose.body.contains("Sam de Boer"));
    let new_ones = get(&college, "/inbox?status=ontvangen&age=week", &intaker).await;
    assert!(new_ones.body.contains("Sam de Boer"), "{}", new_ones.body);

    // A mentor at the college gets the same refusal for a passport that exists and one that
    // does not, and the refusal shows nothing of it.
    let mentor = signed_in(&college, "mentor.mbo").await;
    let real = get(&college, &format!("/inbox/{grant_id}"), &mentor).await;
    let made_up = get(&college, "/inbox/no-such-grant", &mentor).await;
    assert_eq!(real.status, 403);
    assert_eq!(made_up.status, 403);
    assert_eq!(real.body, made_up.body);
    assert!(
        real.body.contains("hoort niet bij jouw werk"),
        "{}",
        real.body
    );
    assert!(!real.body.contains("Sam"));
    assert_eq!(get(&college, "/inbox", &mentor).await.status, 403);
    // ... and the intaker is refused the school side's pages and the audit.
    assert_eq!(get(&college, "/handovers", &intaker).await.status, 403);
    assert_eq!(get(&college, "/handovers.csv", &intaker).await.status, 403);
    assert_eq!(get(&college, "/audit", &intaker).await.status, 403);
    assert_eq!(get(&college, "/mentor", &intaker).await.status, 403);
    // A consultant reads received passports too.
    let consultant = signed_in(&college, "consulent.de.jong").await;
    let theirs = get(&college, "/inbox", &consultant).await;
    assert!(theirs.body.contains("Sam de Boer"), "{}", theirs.body);
    // Without a session: the sign-in page.
    assert_eq!(get(&college, "/inbox", "").await.status, 401);

    // Reading it: as Sam wrote it, only what Sam shared; the view moves it to "gelezen".
    let page = get(&college, &format!("/inbox/{grant_id}"), &intaker).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    for seen in [
        "Paspoort van Sam de Boer",
        "Wie ben ik?",
        "Ik ben Sam.",
        "Ik sleutel aan brommers met mijn oom.",
        "Blij",
    ] {
        assert!(page.body.contains(seen), "{seen:?} in {}", page.body);
    }
    assert!(
        !page.body.contains("Wat kan ik?"),
        "a section Sam did not share"
    );
    assert_eq!(received_status(&region, &grant_id).await, "gelezen");

    // Bad status forms change nothing.
    let csrf = csrf_of(&page.body);
    let path = format!("/inbox/{grant_id}/status");
    let forged = post_form(&college, &path, &intaker, "csrf=forged&status=gestart").await;
    assert_eq!(forged.status, 403);
    let made_up = post_form(
        &college,
        &path,
        &intaker,
        &format!("csrf={csrf}&status=afgewezen"),
    )
    .await;
    assert_eq!(made_up.status, 422);
    assert!(made_up.body.contains("Kies eerst een stand"), "{made_up:?}");
    let by_mentor = post_form(
        &college,
        &path,
        &mentor,
        &format!("csrf={csrf}&status=gestart"),
    )
    .await;
    assert_eq!(by_mentor.status, 403);
    assert_eq!(received_status(&region, &grant_id).await, "gelezen");

    // Planning the intake: saved, said so, and the school hears of it.
    let planned = post_form(
        &college,
        &path,
        &intaker,
        &format!("csrf={csrf}&status=intake+gepland"),
    )
    .await;
    assert_eq!(planned.status, 303, "{planned:?}");
    let back = get(&college, planned.header("location").unwrap(), &intaker).await;
    assert!(
        back.body
            .contains("Opgeslagen: Sam de Boer staat nu op ‘Intake gepland’"),
        "{}",
        back.body
    );
    eventually("the school hears of the intake", || async {
        handover(&region, &grant_id)
            .await
            .is_some_and(|h| h.status == "intake gepland" && h.views >= 1)
    })
    .await;

    // The decaan's handovers page and its CSV show it.
    let decaan = signed_in(&school, "decaan.smit").await;
    let table = get(&school, "/handovers", &decaan).await;
    assert_eq!(table.status, 200, "{table:?}");
    assert!(table.body.contains("Intake gepland"), "{}", table.body);
    assert!(table.body.contains("Loopt"), "{}", table.body);
    let csv = get(&school, "/handovers.csv", &decaan).await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "name,class,pseudonym,to,purpose,consent,status,sent_at,fetched_at,needs_a_look"
    );
    assert_eq!(lines.len(), 2, "{}", csv.body);
    assert!(
        lines[1].contains(",intake,active,intake gepland,") && lines[1].ends_with(",no"),
        "{}",
        lines[1]
    );

    // Sam withdraws consent: the next request shows the erasure and when, not the passport.
    let mut api = region.api(SCHOOL).await.unwrap();
    revoke(
        &mut api,
        make_revocation(&sam.wallet, &grant_id, None, now()).unwrap(),
    )
    .await
    .unwrap();
    eventually("the college erases the passport", || async {
        node_count(&region, MBO, "received").await == 0
    })
    .await;
    let erased = get(&college, &format!("/inbox/{grant_id}"), &intaker).await;
    assert_eq!(erased.status, 410, "{erased:?}");
    assert!(
        erased
            .body
            .contains("De leerling heeft de toestemming ingetrokken"),
        "{}",
        erased.body
    );
    assert!(!erased.body.contains("Ik ben Sam"));
    let list = get(&college, "/inbox", &intaker).await;
    assert!(!list.body.contains("Sam de Boer"));
    // Setting a status on an erased passport shows the erasure too, and stores nothing.
    let late = post_form(
        &college,
        &path,
        &intaker,
        &format!("csrf={csrf}&status=gestart"),
    )
    .await;
    assert_eq!(late.status, 410);

    // The admin's audit names who did what, on the page and in the CSV.
    let admin = signed_in(&college, "beheer").await;
    let audit = get(&college, "/audit", &admin).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    for seen in [
        "intake.jansen",
        "Ingelogd",
        "Paspoort gelezen",
        "Stand gezet",
    ] {
        assert!(audit.body.contains(seen), "{seen:?} in {}", audit.body);
    }
    let csv = get(&college, "/audit.csv?who=intake.jansen", &admin).await;
    let actions: Vec<String> = csv
        .body
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().to_string())
        .collect();
    // Newest first: the status, the view, the sign-in (the list after saving is no view, and
    // the refused forms did nothing).
    assert_eq!(actions, ["status", "view", "sign-in"], "{}", csv.body);
    assert!(csv.body.contains(&format!(",{grant_id},intake gepland")));
}

#[tokio::test]
async fn a_staff_session_ends_after_an_idle_hour_and_lives_while_it_is_used() {
    let (_tmp, region, clock) = region_with_clock().await;
    add_staff_at(&region, MBO, "intake.jansen", "intaker").await;
    let college = web_url(&region, MBO);
    let cookie = signed_in(&college, "intake.jansen").await;
    // Used every 40 minutes: it stays (each use counts as the last one).
    for _ in 0..3 {
        clock.advance(40 * 60);
        let page = get(&college, "/inbox", &cookie).await;
        assert_eq!(page.status, 200, "after 40 minutes: {page:?}");
    }
    // Then an hour and a minute untouched: it has ended, and says to sign in again.
    clock.advance(61 * 60);
    let page = get(&college, "/inbox", &cookie).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("Log eerst in"), "{}", page.body);
}

#[tokio::test]
async fn an_intaker_fetches_a_passport_the_student_let_the_college_fetch() {
    let (_tmp, region) = region().await;
    add_staff_at(&region, MBO, "intake.jansen", "intaker").await;
    add_staff_at(&region, MBO, "mentor.mbo", "mentor").await;
    let college = web_url(&region, MBO);
    let sam = student_named(&region, &cast::birth_month(17), "Sam de Boer").await;
    let mut req = grant_request(MBO, &["personalia", "wie-ben-ik"], "intake", 30);
    req.may_fetch = true;
    req.live = true;
    let grant_id = grant_on(&region, &sam.wallet, "pvs-mbo-v2", &req, None).await;
    let intaker = signed_in(&college, "intake.jansen").await;
    eventually("the college may fetch", || async {
        get(&college, "/inbox", &intaker)
            .await
            .body
            .contains("Je mag ophalen")
    })
    .await;
    let list = get(&college, "/inbox", &intaker).await;
    assert!(
        list.body.contains("Leerling van Vmbo De Brug"),
        "{}",
        list.body
    );
    assert!(
        !list.body.contains("Sam de Boer"),
        "no name before the passport is here"
    );
    let csrf = csrf_of(&list.body);
    let path = format!("/inbox/fetch/{grant_id}");

    // A mentor, or a forged form, asks for nothing.
    let mentor = signed_in(&college, "mentor.mbo").await;
    let by_mentor = post_form(&college, &path, &mentor, &format!("csrf={csrf}")).await;
    assert_eq!(by_mentor.status, 403);
    assert_eq!(
        post_form(&college, &path, &intaker, "csrf=forged")
            .await
            .status,
        403
    );
    assert_eq!(
        node_count(&region, SCHOOL, "trail").await,
        1,
        "only the consent"
    );

    let asked = post_form(&college, &path, &intaker, &format!("csrf={csrf}")).await;
    assert_eq!(asked.status, 303, "{asked:?}");
    let back = get(&college, asked.header("location").unwrap(), &intaker).await;
    assert!(back.body.contains("Gevraagd."), "{}", back.body);
    eventually("the fetched passport is in the list, by name", || async {
        get(&college, "/inbox", &intaker)
            .await
            .body
            .contains("Sam de Boer")
    })
    .await;
    let page = get(&college, &format!("/inbox/{grant_id}"), &intaker).await;
    assert!(
        page.body.contains("Haal de nieuwste versie op"),
        "{}",
        page.body
    );
    // A grant that does not exist: the kind "not here" page.
    let csrf = csrf_of(&page.body);
    let made_up = post_form(
        &college,
        "/inbox/fetch/g-made-up",
        &intaker,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(made_up.status, 404);
}

#[tokio::test]
async fn pickup_codes_refuse_bad_input_on_both_sides_and_keep_nothing() {
    use crate::web_doors::{key_sign_in, post_signature};
    use base64::Engine;
    let (_tmp, region) = region().await;
    add_staff_at(&region, MBO, "intake.jansen", "intaker").await;
    let school = web_url(&region, SCHOOL);
    let college = web_url(&region, MBO);
    let sam = student(&region, &cast::birth_month(17), None).await;
    let noor = student(&region, &cast::birth_month(17), None).await;
    let sams = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    let noors = grant(
        &region,
        &noor.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    let cookie = session_cookie(&key_sign_in(&school, "student", &sam.wallet.key).await);
    let json = |path: &str, body: serde_json::Value| {
        let (school, cookie) = (school.clone(), cookie.clone());
        let path = path.to_string();
        async move {
            http(
                &school,
                "POST",
                &path,
                &[("Content-Type", "application/json"), ("Cookie", &cookie)],
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let digest = b64.encode([7u8; 32]);

    // Noor's consent is not Sam's to make a code for; a digest must be 32 bytes; a signature
    // with nothing prepared, or by a key not on the card, keeps nothing.
    assert_eq!(
        get(&school, &format!("/student/pickup/{noors}"), &cookie)
            .await
            .status,
        404
    );
    let theirs = json(
        "/student/pickup/prepare",
        serde_json::json!({"grant": noors, "digest": digest}),
    )
    .await;
    assert_eq!(theirs.status, 404, "{theirs:?}");
    let short = json(
        "/student/pickup/prepare",
        serde_json::json!({"grant": sams, "digest": b64.encode([7u8; 8])}),
    )
    .await;
    assert_eq!(short.status, 400);
    let nothing = json(
        "/student/pickup/sign",
        serde_json::json!({"key": "", "signature": ""}),
    )
    .await;
    assert!(nothing.status >= 400, "{nothing:?}");
    let prepared = json(
        "/student/pickup/prepare",
        serde_json::json!({"grant": sams, "digest": digest}),
    )
    .await;
    assert_eq!(prepared.status, 200, "{prepared:?}");
    let body: serde_json::Value = serde_json::from_str(&prepared.body).unwrap();
    let body = b64.decode(body["body"].as_str().unwrap()).unwrap();
    let stranger = overstap_proto::sign::generate_signing_key();
    let forged = post_signature(
        &school,
        &cookie,
        "/student/pickup/sign",
        Domain::PickupCode,
        &body,
        &stranger,
    )
    .await;
    assert_eq!(forged.status, 422, "{forged:?}");
    assert_eq!(node_count(&region, SCHOOL, "pickup_codes").await, 0);
    // Prepared again and signed with Sam's key: kept.
    let again = body_again(&school, &cookie, &sams, &digest).await;
    let kept = post_signature(
        &school,
        &cookie,
        "/student/pickup/sign",
        Domain::PickupCode,
        &again,
        &sam.wallet.key,
    )
    .await;
    assert_eq!(kept.status, 200, "{kept:?}");
    assert_eq!(node_count(&region, SCHOOL, "pickup_codes").await, 1);

    // The intaker's side: no code, someone's made-up school, a forged form.
    let intaker = signed_in(&college, "intake.jansen").await;
    let page = get(&college, "/inbox", &intaker).await;
    let csrf = csrf_of(&page.body);
    let not_a_code = post_form(
        &college,
        "/inbox/code",
        &intaker,
        &format!("csrf={csrf}&code=hallo"),
    )
    .await;
    assert_eq!(not_a_code.status, 422);
    assert!(
        not_a_code.body.contains("Dat is geen ophaalcode"),
        "{}",
        not_a_code.body
    );
    let nowhere = post_form(
        &college,
        "/inbox/code",
        &intaker,
        &format!("csrf={csrf}&code=ZZ99-K7QM-3XPA"),
    )
    .await;
    assert_eq!(nowhere.status, 404);
    assert!(
        nowhere
            .body
            .contains("De school aan het begin van de code kennen we niet")
    );
    let forged = post_form(
        &college,
        "/inbox/code",
        &intaker,
        &format!("csrf=forged&code={SCHOOL}-K7QM-3XPA"),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(node_count(&region, MBO, "code_pulls").await, 0);
    // A wrong code that is well formed goes to the school, which says no; the page says so.
    let wrong = post_form(
        &college,
        "/inbox/code",
        &intaker,
        &format!("csrf={csrf}&code={SCHOOL}-K7QM-3XPA"),
    )
    .await;
    assert_eq!(wrong.status, 303);
    eventually("the school's refusal shows", || async {
        get(&college, "/inbox", &intaker)
            .await
            .body
            .contains("De school gaf het paspoort niet")
    })
    .await;
}

/// Prepares Sam's code object again and returns its bytes (what the page would sign).
async fn body_again(school: &str, cookie: &str, grant: &str, digest: &str) -> Vec<u8> {
    use base64::Engine;
    let a = http(
        school,
        "POST",
        "/student/pickup/prepare",
        &[("Content-Type", "application/json"), ("Cookie", cookie)],
        serde_json::json!({"grant": grant, "digest": digest})
            .to_string()
            .as_bytes(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().unwrap())
        .unwrap()
}
