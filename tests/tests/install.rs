//! dist/install.sh: install into a temporary DESTDIR, check the tree file
//! by file (paths, modes, contents), uninstall, and check that nothing
//! but directories is left.  Uses the debug binaries (TARGET_DIR), so no
//! release build is needed.

use kerneld_tests::fake::{bin, run, Outcome, TempDir, LIMIT};
use kerneld_tests::layout::MAN_PAGES;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The directory of the workspace binaries the tests use.
fn target_dir() -> PathBuf {
    bin("kerneld").parent().unwrap().to_path_buf()
}

fn install_sh(args: &[&str], env: &[(&str, &Path)]) -> Outcome {
    let mut cmd = Command::new(repo().join("dist/install.sh"));
    cmd.args(args).env_remove("PREFIX").env_remove("DESTDIR");
    cmd.env_remove("UNITDIR").env_remove("TARGET_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, LIMIT)
}

/// Every file (not directory) under `root`, by path relative to it, with
/// its permission bits.
fn files(root: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(format!("/{rel}"), meta.permissions().mode() & 0o7777);
            }
        }
    }
    out
}

/// What an install with PREFIX must produce: path, mode, source (None
/// for files checked otherwise).
fn expected(prefix: &str, unitdir: &str, zshdir: &str) -> Vec<(String, u32, Option<PathBuf>)> {
    let r = repo();
    let t = target_dir();
    let mut v: Vec<(String, u32, Option<PathBuf>)> = vec![
        (
            format!("{prefix}/sbin/kerneld"),
            0o755,
            Some(t.join("kerneld")),
        ),
        (
            format!("{prefix}/sbin/kerneld-modprobe"),
            0o755,
            Some(t.join("kerneld-modprobe")),
        ),
        (
            format!("{prefix}/sbin/kdstat"),
            0o755,
            Some(t.join("kdstat")),
        ),
        (
            format!("{prefix}/sbin/kdsend"),
            0o755,
            Some(t.join("kdsend")),
        ),
        (format!("{unitdir}/kerneld.service"), 0o644, None),
        (
            "/etc/kerneld.conf".into(),
            0o644,
            Some(r.join("etc/kerneld.conf")),
        ),
        (
            "/etc/kerneld/rare-protocols.conf".into(),
            0o644,
            Some(r.join("etc/rare-protocols.conf")),
        ),
        (
            format!("{prefix}/share/doc/kerneld/README.md"),
            0o644,
            Some(r.join("README.md")),
        ),
        (
            format!("{prefix}/share/doc/kerneld/SECURITY.md"),
            0o644,
            Some(r.join("SECURITY.md")),
        ),
        (
            format!("{prefix}/share/kerneld/installed-files"),
            0o644,
            None,
        ),
    ];
    for page in MAN_PAGES {
        let sect = page.rsplit_once('.').unwrap().1;
        v.push((
            format!("{prefix}/share/man/man{sect}/{page}"),
            0o644,
            Some(r.join("man").join(page)),
        ));
    }
    for schema in [
        "status.json",
        "why.json",
        "record.json",
        "check-config.json",
        "print-config.json",
    ] {
        v.push((
            format!("{prefix}/share/kerneld/schema/{schema}"),
            0o644,
            Some(r.join("schema").join(schema)),
        ));
    }
    v.push((
        format!("{prefix}/lib/systemd/catalog/kerneld.catalog"),
        0o644,
        Some(r.join("dist/kerneld.catalog")),
    ));
    for prog in ["kerneld", "kdstat", "kdsend"] {
        let c = r.join("dist/completions");
        v.push((
            format!("{prefix}/share/bash-completion/completions/{prog}"),
            0o644,
            Some(c.join("bash").join(prog)),
        ));
        v.push((
            format!("{zshdir}/_{prog}"),
            0o644,
            Some(c.join("zsh").join(format!("_{prog}"))),
        ));
        v.push((
            format!("{prefix}/share/fish/vendor_completions.d/{prog}.fish"),
            0o644,
            Some(c.join("fish").join(format!("{prog}.fish"))),
        ));
    }
    v
}

/// Check the installed tree; `not_ours` are files that were there before
/// (not in the list of installed files).
fn check_tree(dest: &Path, prefix: &str, unitdir: &str, zshdir: &str, not_ours: &[&str]) {
    let found = files(dest);
    let want = expected(prefix, unitdir, zshdir);
    let want_paths: Vec<&String> = want.iter().map(|(p, _, _)| p).collect();
    for p in found.keys() {
        assert!(want_paths.contains(&p), "unexpected file installed: {p}");
    }
    for (path, mode, source) in &want {
        let Some(got) = found.get(path) else {
            panic!("{path} was not installed; installed: {found:#?}");
        };
        assert_eq!(*got, *mode, "{path}: mode {got:o}, want {mode:o}");
        let bytes = std::fs::read(dest.join(&path[1..])).unwrap();
        assert!(!bytes.is_empty(), "{path} is empty");
        if let Some(src) = source {
            assert!(
                bytes == std::fs::read(src).unwrap(),
                "{path} differs from {}",
                src.display()
            );
        }
    }
    // The unit starts the installed kerneld.
    let unit = std::fs::read_to_string(dest.join(&unitdir[1..]).join("kerneld.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == format!("ExecStart={prefix}/sbin/kerneld --foreground --register")),
        "{unit}"
    );
    // The installed programs run; kdstat and kdsend need root, so they
    // are in sbin with kerneld.
    let out = run(
        Command::new(dest.join(&prefix[1..]).join("sbin/kdstat")).arg("--version"),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    // The list of installed files names every file but itself.
    let list = std::fs::read_to_string(
        dest.join(&prefix[1..])
            .join("share/kerneld/installed-files"),
    )
    .unwrap();
    let listed: Vec<&str> = list
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    for (path, _, _) in &want {
        assert_eq!(
            listed.contains(&path.as_str()),
            !path.ends_with("/installed-files") && !not_ours.contains(&path.as_str()),
            "{path} in installed-files"
        );
    }
}

/// Nothing but directories under `root`, except `allowed`.
fn only_directories_left(root: &Path, allowed: &[&str]) {
    let left: Vec<String> = files(root)
        .into_keys()
        .filter(|p| !allowed.contains(&p.as_str()))
        .collect();
    assert!(left.is_empty(), "uninstall left files behind: {left:?}");
}

#[test]
fn install_with_prefix_usr_and_uninstall() {
    let dest = TempDir::new();
    let out = install_sh(
        &["install", "PREFIX=/usr"],
        &[("DESTDIR", dest.path()), ("TARGET_DIR", &target_dir())],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    check_tree(
        dest.path(),
        "/usr",
        "/lib/systemd/system",
        "/usr/share/zsh/vendor-completions",
        &[],
    );
    // The drop-in directory the shipped file includes, empty.
    let dropins = dest.path().join("etc/kerneld.d");
    assert!(dropins.is_dir(), "no {}", dropins.display());
    assert_eq!(std::fs::read_dir(&dropins).unwrap().count(), 0);
    let shipped = std::fs::read_to_string(dest.path().join("etc/kerneld.conf")).unwrap();
    assert!(
        shipped
            .lines()
            .any(|l| l == "include /etc/kerneld.d/*.conf"),
        "{shipped}"
    );

    let out = install_sh(&["uninstall", "PREFIX=/usr"], &[("DESTDIR", dest.path())]);
    assert_eq!(out.code(), 0, "{out:?}");
    only_directories_left(dest.path(), &[]);
    assert!(
        !dest.path().join("etc/kerneld").exists() && !dropins.exists(),
        "kerneld's own empty directories go too"
    );
}

#[test]
fn install_with_prefix_usr_local_keeps_existing_configuration() {
    let dest = TempDir::new();
    let d = dest.path().display().to_string();
    let t = target_dir().display().to_string();
    // A configuration of the administrator's, present before.
    std::fs::create_dir_all(dest.path().join("etc")).unwrap();
    std::fs::write(dest.path().join("etc/kerneld.conf"), "delay = 5\n").unwrap();

    let out = install_sh(
        &[
            "PREFIX=/usr/local",
            &format!("DESTDIR={d}"),
            &format!("TARGET_DIR={t}"),
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("keeping the existing"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dest.path().join("etc/kerneld.conf")).unwrap(),
        "delay = 5\n"
    );
    // Everything else as expected (kerneld.conf compared after the swap).
    std::fs::write(
        dest.path().join("etc/kerneld.conf"),
        std::fs::read(repo().join("etc/kerneld.conf")).unwrap(),
    )
    .unwrap();
    check_tree(
        dest.path(),
        "/usr/local",
        "/usr/local/lib/systemd/system",
        "/usr/local/share/zsh/site-functions",
        &["/etc/kerneld.conf"],
    );
    std::fs::write(dest.path().join("etc/kerneld.conf"), "delay = 5\n").unwrap();

    // A configuration file it installed, then changed: kept at uninstall.
    let changed = dest.path().join("etc/kerneld/rare-protocols.conf");
    std::fs::write(&changed, "deny module sctp\n").unwrap();

    let out = install_sh(
        &["uninstall", "PREFIX=/usr/local", &format!("DESTDIR={d}")],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("keeping"), "{out:?}");
    only_directories_left(
        dest.path(),
        &["/etc/kerneld.conf", "/etc/kerneld/rare-protocols.conf"],
    );
}

#[test]
fn reinstalling_keeps_the_configuration_it_installed_its_own() {
    let dest = TempDir::new();
    let env = [("DESTDIR", dest.path()), ("TARGET_DIR", &target_dir())];
    for _ in 0..2 {
        let out = install_sh(&["PREFIX=/opt/kd"], &env);
        assert_eq!(out.code(), 0, "{out:?}");
    }
    let out = install_sh(&["uninstall", "PREFIX=/opt/kd"], &env);
    assert_eq!(out.code(), 0, "{out:?}");
    only_directories_left(dest.path(), &[]);
}

#[test]
fn bad_invocations_fail_cleanly() {
    let dest = TempDir::new();
    let out = install_sh(&["PREFIX=usr"], &[("DESTDIR", dest.path())]);
    assert_eq!(out.code(), 2, "relative PREFIX: {out:?}");
    let out = install_sh(&["frobnicate"], &[("DESTDIR", dest.path())]);
    assert_eq!(out.code(), 2, "{out:?}");
    let out = install_sh(&["uninstall"], &[("DESTDIR", dest.path())]);
    assert_eq!(out.code(), 1, "nothing installed: {out:?}");
    let out = install_sh(
        &["install"],
        &[
            ("DESTDIR", dest.path()),
            ("TARGET_DIR", Path::new("/nonexistent")),
        ],
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("missing"), "{out:?}");
    assert!(
        files(dest.path()).is_empty(),
        "nothing installed on failure"
    );
}
