//! The manual pages in man/: each renders without warnings, and each
//! program's pages cannot drift from the program: every long option,
//! short option and KERNELD_* variable its `--help` prints is documented
//! in its page, and every option the page lists is one the program has.
//! kerneld.conf(5) is checked against kerneld's parser and the shipped
//! example configuration.
//!
//! Needs mandoc and man-db (scripts/install-deps.sh installs both) and
//! the workspace binaries (`cargo build --workspace --bins`).

use kerneld_tests::daemon::check_config;
use kerneld_tests::fake::{bin, run, TempDir, LIMIT};
use kerneld_tests::layout::MAN_PAGES;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs and their pages.
const PROGRAMS: [(&str, &str); 4] = [
    ("kerneld", "kerneld.8"),
    ("kerneld-modprobe", "kerneld-modprobe.8"),
    ("kdstat", "kdstat.8"),
    ("kdsend", "kdsend.8"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn page_path(page: &str) -> PathBuf {
    repo().join("man").join(page)
}

fn source(page: &str) -> String {
    let p = page_path(page);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/install-deps.sh");
}

/// The text of a roff line as it reads: a macro line's arguments joined
/// as the macro joins them (alternating-font macros such as `.BR` without
/// spaces, others with), quotes and font escapes gone, `\-` as `-`.
fn plain(line: &str) -> String {
    let line = line.trim_start();
    let joined = match line.strip_prefix('.') {
        None => line.to_string(),
        Some(rest) => {
            let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let alternating = name.len() == 2 && name.chars().all(|c| "BIR".contains(c));
            macro_args(args).join(if alternating { "" } else { " " })
        }
    };
    let mut s = joined;
    for (from, to) in [
        ("\\-", "-"),
        ("\\fB", ""),
        ("\\fI", ""),
        ("\\fR", ""),
        ("\\fP", ""),
        ("\\c", ""),
        ("\\e", "\\"),
        ("\\(aq", "'"),
        ("\\(dq", "\""),
    ] {
        s = s.replace(from, to);
    }
    s
}

/// The arguments of a macro line: words, or double-quoted strings.
fn macro_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                word.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        out.push(word);
    }
}

/// The lines of one `.SH` section of a page.
fn section<'a>(src: &'a str, name: &str) -> Vec<&'a str> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in src.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            inside = title.trim().trim_matches('"') == name;
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

/// The tags of the `.TP` items of a section (the line after each `.TP`).
fn item_tags(src: &str, name: &str) -> Vec<String> {
    let lines = section(src, name);
    lines
        .windows(2)
        .filter(|w| w[0].trim() == ".TP")
        .map(|w| plain(w[1]))
        .collect()
}

/// Long options (`--name`) in a text.
fn long_options(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let before_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if before_ok && name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            found.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    found
}

/// Short options (`-x`) standing as words in a text.
fn short_options(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '|'))
        .filter(|w| {
            let b = w.as_bytes();
            b.len() == 2 && b[0] == b'-' && b[1].is_ascii_alphabetic()
        })
        .map(String::from)
        .collect()
}

/// Words matching `PREFIX[A-Z_]*` or `prefix[a-z-]*` in a text.
fn words_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest: String = text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            format!("{prefix}{}", rest.trim_end_matches(['-', '_']))
        })
        .collect()
}

fn help(program: &str) -> String {
    let out = run(Command::new(bin(program)).arg("--help"), LIMIT);
    assert_eq!(out.code(), 0, "{program} --help: {out:?}");
    out.stdout
}

#[test]
fn pages_pass_mandoc_lint() {
    for page in MAN_PAGES {
        let out = run(
            Command::new(tool("mandoc"))
                .args(["-T", "lint", "-W", "warning"])
                .arg(page_path(page)),
            LIMIT,
        );
        assert!(
            out.code() == 0 && out.stdout.is_empty() && out.stderr.is_empty(),
            "mandoc -T lint {page}:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn pages_format_with_man_without_warnings() {
    for page in MAN_PAGES {
        let out = run(
            Command::new(tool("man"))
                .args(["--warnings", "-E", "UTF-8", "-l"])
                .arg(page_path(page))
                .env("MANWIDTH", "80")
                .env("MANPAGER", "cat")
                .env("PAGER", "cat"),
            LIMIT,
        );
        assert_eq!(out.code(), 0, "man -l {page}: {}", out.stderr);
        assert!(
            out.stderr.trim().is_empty(),
            "man --warnings -l {page}:\n{}",
            out.stderr
        );
        let name = page.rsplit_once('.').unwrap().0.to_uppercase();
        assert!(
            out.stdout.contains(&name) && out.stdout.contains("NAME"),
            "man -l {page} rendered no page:\n{}",
            out.stdout
        );
    }
}

#[test]
fn pages_carry_the_workspace_version_and_their_own_name() {
    let version = env!("CARGO_PKG_VERSION");
    for page in MAN_PAGES {
        let src = source(page);
        let th = src
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{page}: no .TH line"));
        let (name, sect) = page.rsplit_once('.').unwrap();
        let want_head = format!(".TH {} {sect} ", name.to_uppercase().replace('-', "\\-"));
        assert!(th.starts_with(&want_head), "{page}: {th:?}");
        assert!(
            th.contains(&format!("\"kerneld {version}\"")),
            "{page}: .TH should name \"kerneld {version}\": {th:?}"
        );
    }
}

#[test]
fn cross_references_to_our_pages_resolve() {
    let ours = [
        "kerneld",
        "kerneld-modprobe",
        "kdstat",
        "kdsend",
        "kerneld.conf",
    ];
    for page in MAN_PAGES {
        for line in source(page).lines().filter(|l| l.starts_with(".BR ")) {
            let args = macro_args(&line[4..]);
            for pair in args.windows(2) {
                let name = plain(&pair[0]);
                let Some(n) = pair[1].strip_prefix('(').and_then(|r| r.split(')').next()) else {
                    continue;
                };
                if ours.contains(&name.as_str()) {
                    assert!(
                        page_path(&format!("{name}.{n}")).is_file(),
                        "{page} refers to {name}({n}), which is not in man/"
                    );
                }
            }
        }
    }
}

#[test]
fn every_option_in_help_is_an_item_of_the_page_and_back() {
    for (program, page) in PROGRAMS {
        let help = help(program);
        let src = source(page);
        let tags = item_tags(&src, "OPTIONS").join("\n");
        assert!(!tags.is_empty(), "{page}: no OPTIONS items");

        let in_help = long_options(&help);
        let in_page = long_options(&tags);
        for o in &in_help {
            assert!(
                in_page.contains(o),
                "{program} --help has {o}, but {page} has no OPTIONS item for it"
            );
        }
        for o in &in_page {
            assert!(
                in_help.contains(o),
                "{page} documents {o}, which {program} --help does not know"
            );
        }
        // Short options as clap lists them: at the start of an option line.
        let short_in_help: BTreeSet<String> = help
            .lines()
            .filter(|l| l.trim_start().starts_with('-') && !l.trim_start().starts_with("--"))
            .flat_map(|l| short_options(l.split("  ").find(|s| !s.is_empty()).unwrap_or("")))
            .collect();
        let short_in_page = short_options(&tags);
        for o in &short_in_help {
            assert!(
                short_in_page.contains(o),
                "{program} --help has {o}, but {page} has no OPTIONS item for it"
            );
        }
    }
}

#[test]
fn every_environment_variable_and_setting_in_help_is_in_the_page() {
    for (program, page) in PROGRAMS {
        let help = help(program);
        let src = source(page);
        let env_section = section(&src, "ENVIRONMENT")
            .iter()
            .map(|l| plain(l))
            .collect::<Vec<_>>()
            .join("\n");
        for var in words_with_prefix(&help, "KERNELD_") {
            assert!(
                words_with_prefix(&env_section, "KERNELD_").contains(&var),
                "{program} --help mentions {var}, but the ENVIRONMENT of {page} does not"
            );
        }
        let text: String = src.lines().map(plain).collect::<Vec<_>>().join("\n");
        for key in words_with_prefix(&help, "shim-") {
            assert!(
                words_with_prefix(&text, "shim-").contains(&key),
                "{program} --help mentions the setting {key}, but {page} does not"
            );
        }
    }
}

/// The settings kerneld.conf(5) documents: the keys of its `key = value`
/// items.
fn documented_settings() -> BTreeSet<String> {
    item_tags(&source("kerneld.conf.5"), "SETTINGS")
        .iter()
        .filter(|t| t.contains('='))
        .map(|t| t.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn every_documented_setting_is_one_kerneld_reads() {
    let keys = documented_settings();
    assert!(keys.len() >= 20, "too few settings found: {keys:?}");
    let dir = TempDir::new();
    for key in &keys {
        // Any value: a bad one is an error about the value, an unknown
        // key an error about the key.
        let conf = dir.path().join("k.conf");
        std::fs::write(&conf, format!("{key} = 7\n")).unwrap();
        let out = check_config(&conf);
        assert!(
            !out.stderr.contains("unknown setting"),
            "kerneld.conf(5) documents {key}, which kerneld refuses: {}",
            out.stderr
        );
    }
}

#[test]
fn every_setting_of_the_shipped_configuration_is_documented() {
    let keys = documented_settings();
    let example = std::fs::read_to_string(repo().join("etc/kerneld.conf")).unwrap();
    let mut seen = 0;
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            || line.starts_with("allow")
            || line.starts_with("deny")
        {
            continue;
        }
        seen += 1;
        assert!(
            keys.contains(key),
            "etc/kerneld.conf uses {key}, which kerneld.conf(5) does not document"
        );
    }
    assert!(seen >= 10, "found only {seen} settings in etc/kerneld.conf");
}

#[test]
fn the_shipped_configuration_is_valid() {
    for conf in ["etc/kerneld.conf", "etc/rare-protocols.conf"] {
        let out = check_config(&repo().join(conf));
        assert_eq!(out.code(), 0, "{conf}: {}", out.stderr);
    }
}

#[test]
fn option_extraction_works() {
    let h = "  -f, --foreground\n      --module-dir <DIR>\n see --json or `--watch 1`; x--y -- -q";
    assert_eq!(
        long_options(h).into_iter().collect::<Vec<_>>(),
        ["--foreground", "--json", "--module-dir", "--watch"]
    );
    assert_eq!(
        short_options("-f, --foreground [-q] x-y -")
            .into_iter()
            .collect::<Vec<_>>(),
        ["-f", "-q"]
    );
    assert_eq!(
        plain(".BR \\-f \", \" \\-\\-foreground"),
        "-f, --foreground"
    );
    assert_eq!(plain(".BI delay \" = seconds\""), "delay = seconds");
    assert_eq!(
        plain(".B kerneld \\-\\-check\\-config"),
        "kerneld --check-config"
    );
    assert_eq!(macro_args(" a \"b c\"  d"), ["a", "b c", "d"]);
    assert_eq!(
        words_with_prefix("KERNELD_KEY=, KERNELD_SHIM_LOG", "KERNELD_")
            .into_iter()
            .collect::<Vec<_>>(),
        ["KERNELD_KEY", "KERNELD_SHIM_LOG"]
    );
}
