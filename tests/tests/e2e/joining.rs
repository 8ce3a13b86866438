//! A member joins the region the way it would across two machines, through the `overstap`
//! binary: the school makes its keys and its request, reads out the fingerprint, and the
//! coordinator admits the request only with the fingerprint the school read out.

use std::path::Path;
use std::process::Output;

fn overstap(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_overstap-under-test"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn directory_version(auth: &Path) -> u64 {
    let out = overstap(&[
        "authority",
        "show",
        "--dir",
        auth.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    shown["version"].as_u64().unwrap()
}

#[test]
fn a_school_joins_with_keys_made_on_its_own_machine_and_a_fingerprint_read_out() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("auth");
    let school = tmp.path().join("25LP");
    let a = auth.to_str().unwrap();
    let out = overstap(&["authority", "init", "--dir", a, "--region", "test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = overstap(&[
        "member",
        "init",
        "--dir",
        school.to_str().unwrap(),
        "--org",
        "25LP",
        "--kind",
        "school",
        "--name",
        "Vmbo De Brug",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    // Six groups of five digits, on a line of their own, to read out.
    let fingerprint = said
        .lines()
        .map(str::trim)
        .find(|l| {
            let groups: Vec<_> = l.split(' ').collect();
            groups.len() == 6
                && groups
                    .iter()
                    .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or_else(|| panic!("no fingerprint in {said}"))
        .to_string();
    // Nothing secret is printed.
    let signing = std::fs::read_to_string(school.join("keys/signing.key")).unwrap();
    assert!(!said.contains(signing.trim()), "{said}");
    let request = school.join("membership-request.signed");
    let r = request.to_str().unwrap();
    // The coordinator admits the request, with the fingerprint the school read out (or none).
    let admit = |heard: Option<&str>| {
        let mut args = vec!["authority", "admit", "--dir", a, "--request", r];
        args.extend(heard.map(|f| ["--fingerprint", f]).into_iter().flatten());
        overstap(&args)
    };

    // Without the fingerprint, and with nobody at a terminal to type it: refused, named.
    let out = admit(None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--fingerprint"),
        "{}",
        text(&out.stderr)
    );
    // A fingerprint that is not this request's (misheard, or the request was swapped on its
    // way): refused with both fingerprints, and no directory version, no certificate.
    let wrong = fingerprint.replace(
        &fingerprint[..1],
        if &fingerprint[..1] == "1" { "2" } else { "1" },
    );
    let out = admit(Some(&wrong));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("fingerprint does not match") && e.contains(&fingerprint),
        "{e}"
    );
    assert_eq!(directory_version(&auth), 1);
    assert!(!school.join("tls/cert.pem").exists());

    // Read out right: admitted; the answer (public files only) lands beside the request.
    let out = admit(Some(&fingerprint));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("25LP asks to join as school: Vmbo De Brug"));
    assert_eq!(directory_version(&auth), 2);
    for f in ["tls/cert.pem", "tls/ca.pem", "authority.pub", "node.toml"] {
        assert!(school.join(f).exists(), "{f}");
    }
    // The same request again: 25LP is a member already.
    let out = admit(Some(&fingerprint));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already a member"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(directory_version(&auth), 2);
}
