//! Byte-exact layout against C: a small program declaring `struct
//! kerneld_msg` as the 1996 headers did is compiled with `cc` at test time,
//! fills the struct and prints the bytes `msgsnd` would send.  Those must
//! equal `Message::encode`.  A C compiler is part of the required
//! toolchain: without one these tests fail, they do not skip.

use kmod_ipc::{Header, Message, MsgType, DEFAULT_TEXT_MAX, KERNELD_MINSEQ};
use proptest::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const C_SOURCE: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* As in <linux/kerneld.h> with NEW_KERNELD_PROTOCOL, text sized small. */
struct kerneld_msg {
    long mtype;
    long id;
    short version;
    short pid;
    char text[64];
};

/* The 1995 header: no version, no pid. */
struct kerneld_msg_old {
    long mtype;
    long id;
    char text[64];
};

static void dump(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

/* Hex text to bytes; the text is then NUL-terminated by the struct. */
static size_t unhex(const char *h, char *out, size_t cap)
{
    size_t n = 0;
    unsigned int byte;
    while (h[0] && h[1] && n < cap && sscanf(h, "%2x", &byte) == 1) {
        out[n++] = (char)byte;
        h += 2;
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "sizes") == 0) {
        printf("%zu %zu %zu\n", sizeof(long),
               offsetof(struct kerneld_msg, text),
               offsetof(struct kerneld_msg_old, text));
        return 0;
    }
    if (argc != 6) {
        fprintf(stderr, "usage: %s old|new MTYPE ID PID HEXTEXT\n", argv[0]);
        return 2;
    }
    long mtype = strtol(argv[2], NULL, 10);
    long id = strtol(argv[3], NULL, 10);
    /* As the daemon did with getpid(): truncated to a short. */
    short pid = (short)strtol(argv[4], NULL, 10);
    size_t msgsz;
    if (strcmp(argv[1], "new") == 0) {
        struct kerneld_msg m;
        memset(&m, 0, sizeof m);
        m.mtype = mtype;
        m.id = id;
        m.version = 2;
        m.pid = pid;
        unhex(argv[5], m.text, sizeof m.text - 1);
        msgsz = offsetof(struct kerneld_msg, text) - sizeof(long) + strlen(m.text) + 1;
        dump(&m, sizeof(long) + msgsz);
    } else {
        struct kerneld_msg_old m;
        memset(&m, 0, sizeof m);
        m.mtype = mtype;
        m.id = id;
        unhex(argv[5], m.text, sizeof m.text - 1);
        msgsz = offsetof(struct kerneld_msg_old, text) - sizeof(long) + strlen(m.text) + 1;
        dump(&m, sizeof(long) + msgsz);
    }
    return 0;
}
"#;

const DIR_PREFIX: &str = "kerneld-msg-layout-";

/// Remove the directories of earlier test processes that have exited.
fn remove_stale_dirs(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Compile the C program once per test process.
fn c_program() -> &'static PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        remove_stale_dirs(&tmp);
        // Per process: test runs in parallel must not share the file.
        let dir = tmp.join(format!("{DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let src = dir.join("layout.c");
        let exe = dir.join("layout");
        std::fs::write(&src, C_SOURCE).expect("write C source");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-std=c99", "-Wall", "-Werror", "-O0", "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the C compiler `{cc}` ({e}): a C compiler is part of the \
                     required toolchain for these tests (Debian: apt-get install gcc)"
                )
            });
        assert!(
            out.status.success(),
            "`{cc}` failed to compile {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
}

fn run_c(args: &[String]) -> String {
    let out = Command::new(c_program())
        .args(args)
        .output()
        .expect("run the compiled C program");
    assert!(
        out.status.success(),
        "C program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes C sends for a message, as hex.  `pid` is the full pid the C
/// side truncates itself.
fn c_bytes(new: bool, mtype: i64, id: i64, pid: u32, text: &[u8]) -> String {
    run_c(&[
        if new { "new" } else { "old" }.to_string(),
        mtype.to_string(),
        id.to_string(),
        pid.to_string(),
        hex(text),
    ])
}

fn check(new: bool, mtype: i64, id: i64, pid: u32, text: &[u8]) {
    let header = if new {
        Header::new_with_pid(pid)
    } else {
        Header::Old
    };
    let m = Message {
        mtype,
        id,
        header,
        text: text.to_vec(),
    };
    let ours = m.encode(DEFAULT_TEXT_MAX).unwrap();
    let theirs = c_bytes(new, mtype, id, pid, text);
    assert_eq!(hex(&ours), theirs, "{m:?}");
    // And what C sends, we read back as the same message.
    let bytes: Vec<u8> = (0..theirs.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&theirs[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(Message::decode(&bytes, DEFAULT_TEXT_MAX).unwrap(), m);
}

#[test]
fn c_struct_has_the_documented_offsets() {
    let sizes = run_c(&["sizes".to_string()]);
    assert_eq!(sizes, "8 20 16", "sizeof(long), offsetof(text) new, old");
}

#[test]
fn fixed_messages_match_c() {
    let pid = std::process::id();
    check(false, 2, KERNELD_MINSEQ + 1, 0, b"ppp");
    check(true, 2, KERNELD_MINSEQ + 1, 1234, b"net-pf-4");
    check(true, 255, 1024 + 77, 77, b"keep");
    check(false, 255, 0, 0, b"");
    check(true, 1, 0, pid, b"/sbin/modprobe -k char-major-10-135");
    // A reply: type is the request id, id carries the status.
    check(
        true,
        KERNELD_MINSEQ + 1,
        -1,
        0x12345,
        b"modprobe: not found",
    );
    check(false, 1 << 40, i64::MIN, 0, b"\x01\x7f\x80\xff");
    check(true, i64::MAX, i64::MAX, 0xffff, &[b'x'; 63]);
    check(true, 3, 0, 0x8000, b"slip");
    let req = Message::request(MsgType::RequestModule, 5000, Header::Old, "ppp");
    check(false, req.mtype, req.id, 0, &req.text);
}

proptest! {
    // Each case runs a process: a few dozen are plenty beside the above.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_message_matches_c(
        new in any::<bool>(),
        mtype in any::<i64>(),
        id in any::<i64>(),
        pid in any::<u32>(),
        text in proptest::collection::vec(1u8..=255, 0..=63),
    ) {
        check(new, mtype, id, pid, &text);
    }
}
