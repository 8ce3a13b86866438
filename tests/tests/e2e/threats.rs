//! THREATS.md names, for every threat, the tests that prove its mitigation, and ARCHITECTURE.md
//! the tests that guard each invariant. These tests keep that promise checkable: every
//! `module::name` in backticks there must be a test that exists.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `file` defines a test function `name` (a `#[test]` or `#[tokio::test]` attribute,
/// also inside a `proptest!` block, a few lines above `fn name(`).
fn defines_test(file: &Path, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        let l = l.trim_start();
        (l.starts_with(&format!("fn {name}(")) || l.starts_with(&format!("async fn {name}(")))
            && lines[i.saturating_sub(4)..i]
                .iter()
                .any(|a| a.contains("#[test]") || a.contains("#[tokio::test"))
    })
}

#[test]
fn every_test_named_in_threats_md_exists() {
    tests_named_in("THREATS.md", 40);
}

/// ARCHITECTURE.md's invariants name the tests that guard them, the same way.
#[test]
fn every_test_named_in_architecture_md_exists() {
    tests_named_in("ARCHITECTURE.md", 20);
}

fn tests_named_in(doc: &str, at_least: usize) {
    let text = std::fs::read_to_string(root().join(doc)).expect("the document is there");
    let named: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.contains("::") && !span.contains(' '))
        // A test's name is snake case; `codec::StrictCodec` names a type, and `module::test`
        // says how tests are named.
        .filter(|span| {
            let name = span.rsplit_once("::").unwrap().1;
            name != "test" && !name.chars().any(|c| c.is_ascii_uppercase())
        })
        .collect();
    assert!(
        named.len() >= at_least,
        "{doc} names only {} tests",
        named.len()
    );
    let missing: Vec<&str> = named
        .iter()
        .copied()
        .filter(|span| {
            let (module, name) = span.rsplit_once("::").unwrap();
            let file = if module.ends_with(".rs") {
                root().join(module)
            } else {
                root().join("tests/tests/e2e").join(format!("{module}.rs"))
            };
            !defines_test(&file, name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{doc} names tests that do not exist: {missing:?}"
    );
}
