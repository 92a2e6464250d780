//! The journal catalog kerneld ships (dist/kerneld.catalog): journalctl
//! reads it, and it explains every MESSAGE_ID that kerneld(8) documents
//! (kerneld's and the shim's; unit tests of both programs check that
//! their ids are documented and in the catalog), and no other.
//!
//! Needs journalctl (the systemd package, scripts/install-deps.sh).

use kerneld_tests::fake::{run, TempDir, LIMIT};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The ids of kerneld(8)'s list of message ids (`.B ID` lines).
fn documented() -> BTreeSet<String> {
    let page = std::fs::read_to_string(repo().join("man/kerneld.8")).unwrap();
    page.lines()
        .filter_map(|l| l.strip_prefix(".B "))
        .filter(|w| is_id(w))
        .map(String::from)
        .collect()
}

/// The ids the catalog file has entries for (`-- ID` lines).
fn in_catalog(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("-- "))
        .map(|w| {
            assert!(is_id(w), "catalog entry {w:?} is not a 128-bit id");
            w.to_string()
        })
        .collect()
}

#[test]
fn the_catalog_has_an_entry_for_every_documented_message_id_and_no_other() {
    let catalog = std::fs::read_to_string(repo().join("dist/kerneld.catalog")).unwrap();
    let ids = in_catalog(&catalog);
    let documented = documented();
    // 13 of kerneld's (2 of them the BPF LSM program's module loads), 2
    // of the shim's.
    assert_eq!(documented.len(), 15, "{documented:?}");
    assert_eq!(ids, documented);
}

#[test]
fn journalctl_reads_the_catalog_and_lists_every_entry() {
    let root = TempDir::new();
    let dir = root.join("usr/lib/systemd/catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join("dist/kerneld.catalog"),
        dir.join("kerneld.catalog"),
    )
    .unwrap();
    let out = run(
        Command::new("journalctl")
            .arg("--update-catalog")
            .arg(format!("--root={}", root.path().display())),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    // journalctl complains about an entry it cannot parse, and goes on.
    assert_eq!(out.stderr, "", "{out:?}");
    let out = run(
        Command::new("journalctl")
            .arg(format!("--root={}", root.path().display()))
            .arg("--list-catalog"),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    // `ID kerneld: Subject` per entry.
    let listed: BTreeSet<String> = out
        .stdout
        .lines()
        .map(|l| {
            let (id, rest) = l.split_once(' ').unwrap_or((l, ""));
            assert!(rest.starts_with("kerneld: "), "{l:?}");
            assert!(rest.len() > "kerneld: ".len(), "{l:?} has no subject");
            id.to_string()
        })
        .collect();
    assert_eq!(listed, documented(), "{out:?}");
}
