//! kerneld against kmod's own modprobe, on the Debian 6.12 module tree:
//! for every name of the tree (module names, the aliases of modules.alias,
//! built-in modules, and the names the kernel asks for, such as
//! `net-pf-N`, `char-major-N`, `fs-TYPE`), with a modprobe.d that uses
//! every directive that decides what loads, kerneld's decision must match
//! `modprobe -n -v` given the same tree and configuration; and again after
//! each kind of edit of modprobe.d made while kerneld runs.
//!
//! The policy is `deny module *`, so that nothing is ever loaded (nor an
//! install command run) and the decision's log line lists every module the
//! request would load: that list, less the modules already in the kernel
//! (which modprobe does not print either), is compared with the modules
//! modprobe prints (`insmod PATH`, `install COMMAND`).  A name modprobe
//! does not find must be "not found"; a name for which modprobe prints
//! nothing must load nothing.
//!
//! Differences that remain, by design (see kerneld(8)):
//! - kerneld refuses names with characters request_module() never sends
//!   (`/`, `{`...), before any lookup: the tree's `devname:snd/seq` and
//!   `ishtp:{...}` aliases, which serve `kmod static-nodes` and udev (it
//!   runs modprobe itself).  Excepted by [`documented`].
//! - An alias to a module no file provides (`alias net-pf-31 off`):
//!   modprobe's dry run prints nothing for it, though its real run fails
//!   to insert it, as kerneld does; kerneld lists it among the request's
//!   modules, and the policy judges it.  Excepted by [`documented`].
//! - When an alias names several modules and some fail to load, the
//!   request succeeds if any loads; modprobe's status is that of the last
//!   one.  Only real loads show it, not a dry run.
//! - A module already in the kernel is still judged by the policy (a
//!   denied module is refused even when loaded); modprobe prints nothing
//!   for it, and the comparison leaves such modules out.
//!
//! Needs the binaries (`cargo build --workspace --bins`), the Debian module
//! tree (tests/vm/fetch-kernel.sh) and kmod's modprobe.

use kerneld_tests::daemon::{debian_tree, Kerneld, LIMIT};
use kerneld_tests::fake::run;
use kmod_ipc::MsgType;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Printed by modprobe between the names of one run: `pcspkr`'s install
/// command (so `pcspkr` and its aliases are asked for one at a time).
const SEPARATOR_MODULE: &str = "pcspkr";
const SEPARATOR: &str = "install /bin/true kerneld-separator";

/// A modprobe.d using every directive that changes what a name loads.
/// Install commands never run: the policy denies every module.
const MODPROBE_D: &str = "\
# aliases of these load nothing; their own names still do
blacklist vcan
blacklist crc32c_intel
blacklist floppy
blacklist snd_pcsp
blacklist bluetooth
blacklist nouveau
blacklist usb-storage
# aliases of the configuration, over the index's
alias kerneld-alias dummy
alias kerneld-alias-blacklisted vcan
alias kerneld-two bridge
alias kerneld-two ifb
alias kerneld-off off
alias net-pf-31 off
alias rtnl-link-ipip dummy
# soft dependencies, before and after
softdep dummy pre: ifb post: veth
softdep uhci-hcd pre: ehci-hcd
softdep ohci_hcd pre: ehci_hcd
softdep vxlan post: kerneld-alias
# install commands replace an insertion, also of a dependency
install pcspkr /bin/true kerneld-separator
install floppy /bin/true kerneld-install-floppy
install stp /bin/true kerneld-install-stp
install ip6_udp_tunnel /bin/true kerneld-install-ip6_udp_tunnel
# no effect on what loads
options snd-pcsp index=-2
options bonding max_bonds=0
remove dummy /bin/true
";

fn norm(m: &str) -> String {
    m.replace('-', "_")
}

/// kmod's modprobe, with the tree's ROOT and release for -d and -S.
struct Modprobe {
    bin: PathBuf,
    root: PathBuf,
    release: String,
    /// The modules that have a file in the tree or are built in.
    files: BTreeSet<String>,
}

impl Modprobe {
    fn new(tree: &Path) -> Modprobe {
        let bin = ["/usr/sbin/modprobe", "/sbin/modprobe"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("this test needs kmod's modprobe (apt-get install kmod)");
        let v = run(Command::new(&bin).arg("--version"), Duration::from_secs(30));
        assert!(
            v.stdout.starts_with("kmod version"),
            "{} is not kmod's modprobe: {v:?}",
            bin.display()
        );
        // tree = ROOT/lib/modules/RELEASE
        let release = tree.file_name().unwrap().to_string_lossy().into_owned();
        let root = tree.ancestors().nth(3).unwrap().to_path_buf();
        let files = lines(&tree.join("modules.dep"))
            .iter()
            .chain(&lines(&tree.join("modules.builtin")))
            .map(|l| module_of_path(l.split(':').next().unwrap_or("")))
            .collect();
        Modprobe {
            bin,
            root,
            release,
            files,
        }
    }

    /// What `modprobe -n -v -C CONF` says of each name.  With `batch`
    /// (CONF has the separator's install command), as few processes as the
    /// separator allows; else one per name.
    fn expect(&self, conf: &Path, names: &[String], batch: bool) -> BTreeMap<String, Expect> {
        let mut out = BTreeMap::new();
        let (alone, batched): (Vec<&String>, Vec<&String>) = names
            .iter()
            .partition(|n| !batch || self.prints_separator(n));
        for chunk in batched.chunks(400) {
            let mut args: Vec<&str> = Vec::new();
            for n in chunk {
                args.push(n);
                args.push(SEPARATOR_MODULE);
            }
            let (stdout, stderr) = self.run(conf, &args);
            let parts: Vec<&str> = stdout.split(&format!("{SEPARATOR} \n")).collect();
            assert_eq!(
                parts.len(),
                chunk.len() + 1,
                "modprobe printed the separator an unexpected number of times:\n{stdout}"
            );
            for (n, part) in chunk.iter().zip(parts) {
                out.insert(n.to_string(), parse(n, part, &stderr));
            }
        }
        for n in alone {
            let (stdout, stderr) = self.run(conf, &[n]);
            out.insert(n.to_string(), parse(n, &stdout, &stderr));
        }
        out
    }

    /// Names whose own output holds the separator's line.
    fn prints_separator(&self, name: &str) -> bool {
        matches!(norm(name).as_str(), "pcspkr" | "platform:pcspkr")
    }

    fn run(&self, conf: &Path, names: &[&str]) -> (String, String) {
        let out = run(
            Command::new(&self.bin)
                .args(["-n", "-v", "-a", "-d"])
                .arg(&self.root)
                .arg("-S")
                .arg(&self.release)
                .arg("-C")
                .arg(conf)
                .args(names),
            Duration::from_secs(300),
        );
        (out.stdout, out.stderr)
    }
}

/// What a request for a name comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    NotFound,
    /// These modules would be inserted (or their install commands run).
    Loads(BTreeSet<String>),
}

/// modprobe's output for one name.
fn parse(name: &str, stdout: &str, stderr: &str) -> Expect {
    let missing = format!("Module {name} not found in directory ");
    if stderr.lines().any(|l| l.contains(&missing)) {
        return Expect::NotFound;
    }
    let mut mods = BTreeSet::new();
    for l in stdout.lines() {
        if let Some(path) = l.strip_prefix("insmod ") {
            let file = path.split_whitespace().next().unwrap_or("");
            let base = Path::new(file).file_name().unwrap().to_string_lossy();
            let m = base.split(".ko").next().unwrap();
            mods.insert(norm(m));
        } else if l.starts_with(SEPARATOR) {
            mods.insert(SEPARATOR_MODULE.to_string());
        } else if let Some(rest) = l.split("kerneld-install-").nth(1) {
            mods.insert(norm(rest.trim()));
        } else if !l.trim().is_empty() && !l.starts_with("builtin ") {
            panic!("modprobe printed an unexpected line for {name}: {l:?}");
        }
    }
    Expect::Loads(mods)
}

/// kerneld's decisions on `names`, as comparable with [`Expect`] (Err:
/// an answer of another kind).
fn decide(
    k: &Kerneld,
    names: &[String],
    in_kernel: &BTreeSet<String>,
) -> BTreeMap<String, Result<Expect, String>> {
    // A request's line is logged just after its answer is sent: the log
    // is read once all the answers are in and every request has its line.
    let start = k.log().len();
    let replies: Vec<_> = names
        .iter()
        .map(|n| (n, k.request(MsgType::RequestModule, n)))
        .collect();
    let end = std::time::Instant::now() + LIMIT;
    let log = loop {
        let log = k.log();
        let logged = log[start..]
            .lines()
            .filter(|l| l.contains("request_module"))
            .count();
        if logged >= names.len() || std::time::Instant::now() >= end {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = decisions(&log[start..]);
    let mut out = BTreeMap::new();
    for (name, r) in replies {
        let text = r.text_lossy();
        let got = if r.status == 0 {
            // A blacklisted alias, or already loaded: nothing to insert.
            Ok(Expect::Loads(BTreeSet::new()))
        } else if text == format!("{name}: not found") {
            Ok(Expect::NotFound)
        } else if text.starts_with(&format!("{name}: denied by policy: deny module *")) {
            match lines.get(name.as_str()) {
                Some(modules) => Ok(Expect::Loads(
                    modules
                        .iter()
                        .map(|m| norm(m))
                        .filter(|m| !in_kernel.contains(m))
                        .collect(),
                )),
                None => Err(format!("{text} (no decision logged)")),
            }
        } else {
            Err(text)
        };
        out.insert(name.clone(), got);
    }
    out
}

/// The modules of each denial in `log`, by requested name.
///
/// A denial is the request's one line: `request_module[ for REQUESTER]:
/// NAME: denied by policy: RULE (FILE:LINE)[ (module M)] -> [MODULES] (T ms)`.
fn decisions(log: &str) -> BTreeMap<&str, Vec<&str>> {
    log.lines()
        .filter(|l| l.contains("request_module"))
        .filter_map(|l| {
            let (head, rest) = l.split_once(": denied by policy: ")?;
            let name = head.rsplit_once(": ")?.1;
            let (_, rest) = rest.split_once(" -> [")?;
            let (modules, _) = rest.split_once(']')?;
            Some((name, modules.split_whitespace().collect()))
        })
        .collect()
}

/// Module names of the tree's built-in list, and the modules live in the
/// running kernel (with an initstate in /sys/module): libkmod, for
/// kerneld and modprobe alike, takes them as loaded.
fn in_kernel(tree: &Path) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = lines(&tree.join("modules.builtin"))
        .iter()
        .map(|l| module_of_path(l))
        .collect();
    if let Ok(rd) = std::fs::read_dir("/sys/module") {
        out.extend(
            rd.flatten()
                .filter(|e| e.path().join("initstate").exists())
                .map(|e| norm(&e.file_name().to_string_lossy())),
        );
    }
    out
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// `kernel/net/802/stp.ko.xz` -> `stp`.
fn module_of_path(p: &str) -> String {
    let base = p.rsplit('/').next().unwrap_or(p);
    norm(base.split(".ko").next().unwrap_or(base))
}

/// Every name of the tree a request may carry: module names as their
/// files spell them, the aliases without wildcards, built-in modules, the
/// names the kernel forms, and a few the tree lacks.
fn names(tree: &Path) -> Vec<String> {
    let mut n = BTreeSet::new();
    for l in lines(&tree.join("modules.dep")) {
        let file = l.split(':').next().unwrap_or("");
        let base = file.rsplit('/').next().unwrap_or(file);
        n.insert(base.split(".ko").next().unwrap_or(base).to_string());
    }
    for l in lines(&tree.join("modules.alias")) {
        let mut w = l.split_whitespace();
        if let (Some("alias"), Some(a)) = (w.next(), w.next()) {
            if !a.contains(['*', '?', '[']) {
                n.insert(a.to_string());
            }
        }
    }
    for l in lines(&tree.join("modules.builtin")) {
        n.insert(module_of_path(&l));
    }
    // As request_module() forms them: net/socket.c, fs/filesystems.c,
    // fs/char_dev.c, block/genhd.c, crypto/api.c.
    for pf in 0..=46 {
        n.insert(format!("net-pf-{pf}"));
    }
    for proto in [0, 6, 17, 33, 132, 136, 262] {
        for pf in [2, 10] {
            n.insert(format!("net-pf-{pf}-proto-{proto}"));
            n.insert(format!("net-pf-{pf}-proto-{proto}-type-1"));
        }
    }
    for major in 0..=255 {
        n.insert(format!("char-major-{major}"));
        n.insert(format!("block-major-{major}"));
    }
    for fs in [
        "ext4",
        "ext3",
        "btrfs",
        "xfs",
        "vfat",
        "msdos",
        "exfat",
        "ntfs3",
        "fuse",
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "iso9660",
        "udf",
        "squashfs",
        "overlay",
        "9p",
        "hfsplus",
        "jfs",
        "kdtest-no-such-fs",
    ] {
        n.insert(format!("fs-{fs}"));
    }
    for c in [
        "cbc(aes)",
        "cbc(aes)-all",
        "sha256-all",
        "gcm(aes)",
        "xts(aes)",
        "crc32c",
    ] {
        n.insert(format!("crypto-{c}"));
    }
    for c in [
        "kerneld-alias",
        "kerneld-alias-blacklisted",
        "kerneld-two",
        "kerneld-off",
        "kdtest-no-such-module",
    ] {
        n.insert(c.to_string());
    }
    n.into_iter().collect()
}

/// Why kerneld decides `name` unlike modprobe, if by design.
fn documented(
    name: &str,
    modprobe: &Expect,
    kerneld: &Result<Expect, String>,
    files: &BTreeSet<String>,
) -> Option<&'static str> {
    match (modprobe, kerneld) {
        // `devname:snd/seq`, `ishtp:{33AECD58-...}`: aliases for
        // `kmod static-nodes` and for udev, which runs modprobe itself;
        // request_module() never sends them.  kerneld takes
        // only the characters of the names the kernel sends.
        (_, Err(text))
            if text.starts_with("refused: module name contains")
                && name.contains(['/', '{', '}']) =>
        {
            Some("a name with characters kerneld refuses")
        }
        // `alias net-pf-31 off`: a module no file provides.  modprobe's
        // dry run prints nothing for it, but its real run fails to insert
        // it (status 1), as kerneld's load does; kerneld lists it among
        // the modules of the request, so the policy judges it too.
        (Expect::Loads(want), Ok(Expect::Loads(got)))
            if got.is_superset(want) && got.difference(want).all(|m| !files.contains(m)) =>
        {
            Some("a module without a file")
        }
        _ => None,
    }
}

/// The names whose decisions differ, with both answers.
fn differences(
    k: &Kerneld,
    mp: &Modprobe,
    conf: &Path,
    names: &[String],
    in_kernel: &BTreeSet<String>,
) -> Vec<String> {
    let batch = std::fs::read_dir(conf)
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("kerneld-separator")));
    let expect = mp.expect(conf, names, batch);
    let got = decide(k, names, in_kernel);
    names
        .iter()
        .filter(|n| got[*n].as_ref() != Ok(&expect[*n]))
        .filter(|n| documented(n, &expect[*n], &got[*n], &mp.files).is_none())
        .map(|n| format!("{n}: modprobe {:?}, kerneld {:?}", expect[n], got[n]))
        .collect()
}

fn start(modprobe_d: &str) -> Kerneld {
    // No negative cache, no rate limit: every request is decided anew.
    Kerneld::builder()
        .debian_tree()
        .modprobe(modprobe_d)
        .config("negative-cache = 0\nrate-limit = 0\ndeny module *\n")
        .start()
}

#[test]
fn every_name_of_the_tree_is_decided_as_modprobe_would() {
    let tree = debian_tree();
    let mp = Modprobe::new(tree);
    let k = start(MODPROBE_D);
    let conf = k.dir().join("modprobe.d");
    let names = names(tree);
    assert!(names.len() > 8000, "{} names", names.len());
    let in_kernel = in_kernel(tree);
    let diff = differences(&k, &mp, &conf, &names, &in_kernel);
    assert!(
        diff.is_empty(),
        "{} of {} names decided unlike modprobe:\n{}",
        diff.len(),
        names.len(),
        diff.join("\n")
    );
}

/// Each kind of edit of modprobe.d, made while kerneld runs, is honoured
/// by the next decision, without SIGHUP.
#[test]
fn edits_of_modprobe_d_are_honoured_at_once() {
    let tree = debian_tree();
    let mp = Modprobe::new(tree);
    let k = start("blacklist vcan\n");
    let conf = k.dir().join("modprobe.d");
    let main = conf.join("kerneld-test.conf");
    let in_kernel = in_kernel(tree);
    let names: Vec<String> = [
        "rtnl-link-dummy",
        "rtnl-link-ifb",
        "rtnl-link-vcan",
        "rtnl-link-bridge",
        "crc32c",
        "kerneld-new",
        "dummy",
        "vcan",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let check = |what: &str, want: &[(&str, Expect)]| {
        let diff = differences(&k, &mp, &conf, &names, &in_kernel);
        assert!(
            diff.is_empty(),
            "after {what}, decided unlike modprobe:\n{}\nlog:\n{}",
            diff.join("\n"),
            k.log()
        );
        // And the edit did change what modprobe says (the test tests).
        let now = mp.expect(&conf, &names, false);
        for (n, e) in want {
            assert_eq!(&now[*n], e, "after {what}: modprobe on {n}");
        }
    };
    let nothing = || Expect::Loads(BTreeSet::new());
    let loads = |m: &[&str]| Expect::Loads(m.iter().map(|s| s.to_string()).collect());
    let append = |p: &Path, text: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };

    check("the start", &[("rtnl-link-dummy", loads(&["dummy"]))]);
    // The usual quick mitigation: a line appended to an existing file.
    append(&main, "blacklist dummy\n");
    check(
        "appending a blacklist line",
        &[("rtnl-link-dummy", nothing())],
    );
    // The same file rewritten in place (same inode): dummy back, ifb out.
    std::fs::write(&main, "blacklist vcan\nblacklist ifb\n").unwrap();
    check(
        "rewriting a file in place",
        &[
            ("rtnl-link-dummy", loads(&["dummy"])),
            ("rtnl-link-ifb", nothing()),
        ],
    );
    // A new file: an alias, a soft dependency and an install command.
    let new = conf.join("new.conf");
    std::fs::write(
        &new,
        "alias kerneld-new vcan\nsoftdep dummy pre: veth\ninstall bridge /bin/true kerneld-install-bridge\n",
    )
    .unwrap();
    check(
        "adding a file",
        &[
            ("rtnl-link-dummy", loads(&["dummy", "veth"])),
            ("kerneld-new", nothing()),
        ],
    );
    // Renamed out of modprobe.d's reach (only *.conf is read), and back.
    let off = conf.join("new.conf.off");
    std::fs::rename(&new, &off).unwrap();
    check(
        "renaming a file away",
        &[
            ("kerneld-new", Expect::NotFound),
            ("rtnl-link-dummy", loads(&["dummy"])),
        ],
    );
    std::fs::rename(&off, &new).unwrap();
    check("renaming it back", &[("kerneld-new", nothing())]);
    // An editor's save: a new file renamed over the old one.
    let tmp = conf.join(".kerneld-test.conf.swp");
    std::fs::write(&tmp, "blacklist crc32c_intel\n").unwrap();
    std::fs::rename(&tmp, &main).unwrap();
    check(
        "replacing a file by rename",
        &[
            ("rtnl-link-vcan", loads(&["vcan", "can_dev"])),
            ("kerneld-new", loads(&["vcan", "can_dev"])),
        ],
    );
    // Deleted files.
    std::fs::remove_file(&new).unwrap();
    std::fs::remove_file(&main).unwrap();
    check(
        "deleting the files",
        &[
            ("kerneld-new", Expect::NotFound),
            ("rtnl-link-dummy", loads(&["dummy"])),
        ],
    );
}
