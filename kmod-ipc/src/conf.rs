//! The lines of `kerneld.conf`, includes and all, for kerneld and
//! kerneld-modprobe alike.
//!
//! This module knows the file's shape, not its keys: a line is a comment,
//! blank, an `include PATH`, or something else that the reader's
//! [`Visitor`] makes sense of (`key = value`, a policy rule).  [`walk`]
//! reads a file, follows its includes in place, and hands every other
//! non-empty line to the visitor, so that kerneld and the shim read the
//! same lines from the same files under the same bounds:
//!
//! - every file read is a regular file of at most [`MAX_FILE_BYTES`]
//!   (a FIFO would hang the reader, `/dev/zero` would never end);
//! - includes nest at most [`MAX_INCLUDE_DEPTH`] deep;
//! - a file that includes itself, directly or through others, is an
//!   error at the include that closes the loop (the files being read are
//!   known by device and inode, so another path to the same file is
//!   caught too);
//! - one walk follows at most [`MAX_INCLUDES`] includes and reads at most
//!   [`MAX_TOTAL_BYTES`] in all, so that files that include each other
//!   many times without a loop cannot multiply the work either;
//! - a relative include is taken from the directory of the including file;
//! - `include DIR/*.conf` reads the regular files of DIR whose names match,
//!   in lexical order, and no match is no error ([`glob`] says which
//!   patterns: `*` in the last component only); each file counts as one
//!   include.
//!
//! These bounds are what keeps the shim fast: it reads the file at every
//! request_module(), and a file that included itself six times once cost
//! it 6^8 reads (more than 30 s) per request.
//!
//! It works on bytes and allocates one buffer per file read (and a path
//! per include): the shim runs it at every request_module(), where every
//! instruction is start-up time.

pub mod shim;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest configuration file (or included file) read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How deep includes nest: the top file is depth 0, and an `include` at
/// this depth is an error.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Most includes one walk follows, all files together.
pub const MAX_INCLUDES: usize = 256;

/// Most bytes one walk reads, the top file and all included ones together.
pub const MAX_TOTAL_BYTES: u64 = 4 * MAX_FILE_BYTES;

/// One non-empty line, its comment removed and its blanks trimmed.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The file it is in.
    pub file: &'a Path,
    /// Its line number, from 1.
    pub number: usize,
    /// The text: not empty, no leading or trailing ASCII blanks.
    pub text: &'a [u8],
}

impl Line<'_> {
    /// `key = value` (blanks around `=` optional), both trimmed; `None`
    /// when the line has no `=`.
    pub fn setting(&self) -> Option<(&[u8], &[u8])> {
        let eq = self.text.iter().position(|&b| b == b'=')?;
        Some((
            self.text[..eq].trim_ascii(),
            self.text[eq + 1..].trim_ascii(),
        ))
    }
}

/// An include that could not be followed.
#[derive(Debug)]
pub struct IncludeError<'a> {
    /// The `include` line.
    pub line: Line<'a>,
    pub problem: IncludeProblem,
}

/// Why an include was not followed.
#[derive(Debug)]
pub enum IncludeProblem {
    /// `include` without exactly one path.
    Syntax,
    /// The include would be nested deeper than [`MAX_INCLUDE_DEPTH`].
    TooDeep,
    /// The included file is being read already: the include closes a loop.
    Loop { path: PathBuf },
    /// The walk has followed [`MAX_INCLUDES`] includes already.
    TooMany,
    /// A pattern with `*` outside the last component of the path.
    Glob { pattern: PathBuf },
    /// The included file could not be read (see [`read`]).
    Unreadable { path: PathBuf, error: io::Error },
}

impl std::fmt::Display for IncludeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IncludeProblem::Syntax => f.write_str("include takes one path"),
            IncludeProblem::TooDeep => write!(
                f,
                "includes nested too deeply (at most {MAX_INCLUDE_DEPTH} levels)"
            ),
            IncludeProblem::Loop { path } => write!(
                f,
                "{} includes itself (directly or through other files)",
                path.display()
            ),
            IncludeProblem::TooMany => write!(
                f,
                "more than {MAX_INCLUDES} includes in all; merge some of the files"
            ),
            IncludeProblem::Glob { pattern } => write!(
                f,
                "{}: `*` may stand only in the last part of the path (include DIR/*.conf)",
                pattern.display()
            ),
            IncludeProblem::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
        }
    }
}

/// What a reader does with the lines [`walk`] finds.
pub trait Visitor {
    type Error;
    /// Every non-empty line that is not an `include`.
    fn line(&mut self, line: &Line<'_>) -> Result<(), Self::Error>;
    /// An include that could not be followed: `Err` stops the walk, `Ok`
    /// skips the include and goes on with the next line.
    fn include_failed(&mut self, error: IncludeError<'_>) -> Result<(), Self::Error>;
}

/// Walk `text`, the contents of `file`, following its includes.
pub fn walk<V: Visitor>(file: &Path, text: &[u8], visitor: &mut V) -> Result<(), V::Error> {
    let mut state = Walk {
        // The top file by identity, when it is one (a caller may pass text
        // that was never a file): a loop back to it is then seen at once.
        reading: std::fs::metadata(file)
            .map(|m| vec![(m.dev(), m.ino())])
            .unwrap_or_default(),
        includes: 0,
        bytes: text.len() as u64,
    };
    state.walk(file, text, visitor, 0)
}

/// The bounds of one walk.
struct Walk {
    /// Device and inode of the files being read: the top file and the
    /// includes that led to the current one.
    reading: Vec<(u64, u64)>,
    /// Includes followed so far.
    includes: usize,
    /// Bytes read so far, the top file's included.
    bytes: u64,
}

impl Walk {
    fn walk<V: Visitor>(
        &mut self,
        file: &Path,
        text: &[u8],
        visitor: &mut V,
        depth: usize,
    ) -> Result<(), V::Error> {
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let text = strip_comment(raw).trim_ascii();
            if text.is_empty() {
                continue;
            }
            let line = Line {
                file,
                number: i + 1,
                text,
            };
            let mut words = text
                .split(u8::is_ascii_whitespace)
                .filter(|w| !w.is_empty());
            if words.next() != Some(b"include") {
                visitor.line(&line)?;
                continue;
            }
            let (Some(target), None) = (words.next(), words.next()) else {
                visitor.include_failed(IncludeError {
                    line,
                    problem: IncludeProblem::Syntax,
                })?;
                continue;
            };
            let target = Path::new(std::ffi::OsStr::from_bytes(target));
            let path = if target.is_relative() {
                file.parent().unwrap_or(Path::new("/")).join(target)
            } else {
                target.to_path_buf()
            };
            if !is_glob(target) {
                self.follow(&path, line, visitor, depth)?;
                continue;
            }
            match glob(&path) {
                Ok(paths) => {
                    for p in paths {
                        self.follow(&p, line, visitor, depth)?;
                    }
                }
                Err(problem) => visitor.include_failed(IncludeError { line, problem })?,
            }
        }
        Ok(())
    }

    /// Read the file at `path`, named by the include on `line`, in place.
    fn follow<V: Visitor>(
        &mut self,
        path: &Path,
        line: Line<'_>,
        visitor: &mut V,
        depth: usize,
    ) -> Result<(), V::Error> {
        match self.include(path, depth) {
            Ok(inner) => {
                self.reading.push(inner.id);
                let walked = self.walk(path, &inner.text, visitor, depth + 1);
                self.reading.pop();
                walked
            }
            Err(problem) => visitor.include_failed(IncludeError { line, problem }),
        }
    }

    /// Open and read the file an include names, within the bounds.
    fn include(&mut self, path: &Path, depth: usize) -> Result<Included, IncludeProblem> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(IncludeProblem::TooDeep);
        }
        if self.includes >= MAX_INCLUDES {
            return Err(IncludeProblem::TooMany);
        }
        self.includes += 1;
        let unreadable = |error| IncludeProblem::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let (file, meta) = open(path).map_err(unreadable)?;
        let id = (meta.dev(), meta.ino());
        if self.reading.contains(&id) {
            return Err(IncludeProblem::Loop {
                path: path.to_path_buf(),
            });
        }
        let left = MAX_TOTAL_BYTES.saturating_sub(self.bytes);
        let limit = left.min(MAX_FILE_BYTES);
        let text = read_open(file, meta.len(), limit, || {
            if limit < MAX_FILE_BYTES {
                format!("the files read would pass {MAX_TOTAL_BYTES} bytes in all")
            } else {
                format!("larger than {MAX_FILE_BYTES} bytes")
            }
        })
        .map_err(unreadable)?;
        self.bytes += text.len() as u64;
        Ok(Included { text, id })
    }
}

/// Most directory entries an include with `*` looks through.
pub const MAX_GLOB_ENTRIES: usize = 4096;

/// Whether an include names files by a pattern (any `*` in it).
fn is_glob(path: &Path) -> bool {
    path.as_os_str().as_bytes().contains(&b'*')
}

/// The files a pattern include names, in lexical (byte) order: `*` in the
/// last component stands for any run of characters, a name starting with
/// `.` is matched only by a pattern starting with `.` (as in the shell),
/// and only regular files (or links to them) count.  No match, or no such
/// directory, is an empty list: a drop-in directory may be empty or
/// absent.  A directory listing and a byte match, no more: the shim runs
/// this at every request_module().
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, IncludeProblem> {
    let unsupported = || IncludeProblem::Glob {
        pattern: pattern.to_path_buf(),
    };
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Err(unsupported());
    };
    if is_glob(dir) {
        return Err(unsupported());
    }
    let name = name.as_bytes();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(IncludeProblem::Unreadable {
                path: dir.to_path_buf(),
                error,
            })
        }
    };
    let mut found = Vec::new();
    for (i, entry) in entries.enumerate() {
        if i >= MAX_GLOB_ENTRIES {
            return Err(IncludeProblem::Unreadable {
                path: dir.to_path_buf(),
                error: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {MAX_GLOB_ENTRIES} entries to look through"),
                ),
            });
        }
        let entry = entry.map_err(|error| IncludeProblem::Unreadable {
            path: dir.to_path_buf(),
            error,
        })?;
        let file = entry.file_name();
        let bytes = file.as_bytes();
        if bytes.starts_with(b".") && !name.starts_with(b".") || !glob_match(name, bytes) {
            continue;
        }
        let path = dir.join(&file);
        // A directory or a FIFO named like a drop-in is not one.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `name` matches `pattern`, where `*` matches any run of bytes
/// and every other byte itself.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let mut parts = pattern.split(|&b| b == b'*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&[u8]> = parts.collect();
    let Some(last) = parts.pop() else {
        // No `*` at all: the whole name.
        return rest.is_empty();
    };
    // Each middle part at its leftmost place leaves the most room for the
    // rest: enough for `*` alone.
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        match rest.windows(part.len()).position(|w| w == part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A file an include names, read.
struct Included {
    text: Vec<u8>,
    /// Its device and inode.
    id: (u64, u64),
}

/// The line without its comment: `#` at the start of the line or after a
/// blank starts one; elsewhere (`/opt/a#b`) it is a character.
pub fn strip_comment(line: &[u8]) -> &[u8] {
    let mut prev_blank = true;
    for (i, &b) in line.iter().enumerate() {
        if b == b'#' && prev_blank {
            return &line[..i];
        }
        prev_blank = b.is_ascii_whitespace();
    }
    line
}

/// Read a configuration file: a regular file of at most
/// [`MAX_FILE_BYTES`], opened without blocking so that a FIFO is refused
/// at once rather than waited on.
///
/// One `fstat` and plain reads into a buffer sized from it: no probing for
/// the end beyond the one read that returns 0.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let (file, meta) = open(path)?;
    read_open(file, meta.len(), MAX_FILE_BYTES, || {
        format!("larger than {MAX_FILE_BYTES} bytes")
    })
}

/// Open a configuration file that is a regular file, without blocking.
fn open(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (kerneld reads only regular files)",
        ));
    }
    Ok((file, meta))
}

/// Read `file`, of `size` bytes when it was opened, refusing more than
/// `limit` bytes (`too_large` says why).
fn read_open(
    mut file: File,
    size: u64,
    limit: u64,
    too_large: impl Fn() -> String,
) -> io::Result<Vec<u8>> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidData, too_large());
    if size > limit {
        return Err(too_large());
    }
    // One byte more than the size, so that the end is seen without a
    // second allocation (and a file that grew since is caught below).
    let mut bytes = vec![0u8; size as usize + 1];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            if len as u64 > limit {
                return Err(too_large());
            }
            bytes.resize((len * 2).min(limit as usize + 1), 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects lines as `file:n: text` and include errors as
    /// `file:n: problem`, going on past them.
    #[derive(Default)]
    struct Collect(Vec<String>);

    impl Visitor for Collect {
        type Error = ();
        fn line(&mut self, l: &Line<'_>) -> Result<(), ()> {
            let name = l.file.file_name().unwrap().to_string_lossy();
            let text = String::from_utf8_lossy(l.text);
            self.0.push(format!("{name}:{}: {text}", l.number));
            Ok(())
        }
        fn include_failed(&mut self, e: IncludeError<'_>) -> Result<(), ()> {
            let name = e.line.file.file_name().unwrap().to_string_lossy();
            self.0
                .push(format!("{name}:{}: error: {}", e.line.number, e.problem));
            Ok(())
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kmod-ipc-conf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn walk_file(path: &Path) -> Vec<String> {
        let mut c = Collect::default();
        walk(path, &read(path).unwrap(), &mut c).unwrap();
        c.0
    }

    #[test]
    fn comments_blanks_and_settings() {
        assert_eq!(strip_comment(b"# all"), b"");
        assert_eq!(strip_comment(b"a = /opt/a#b # c"), b"a = /opt/a#b ");
        assert_eq!(strip_comment(b"a\t#c"), b"a\t");
        let l = Line {
            file: Path::new("f"),
            number: 1,
            text: b"shim-timeout=2.5",
        };
        assert_eq!(l.setting(), Some((&b"shim-timeout"[..], &b"2.5"[..])));
        let l = Line {
            text: b"a  =  b c ",
            ..l
        };
        assert_eq!(l.setting(), Some((&b"a"[..], &b"b c"[..])));
        assert_eq!(
            Line {
                text: b"deny x",
                ..l
            }
            .setting(),
            None
        );
    }

    #[test]
    fn includes_are_read_in_place_relative_to_their_file() {
        let d = temp_dir("inc");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(
            d.join("top.conf"),
            "a = 1\r\ninclude sub/mid.conf # here\nb = 2\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sub/mid.conf"),
            "  # comment\n\nc = 3\ninclude leaf.conf\n",
        )
        .unwrap();
        std::fs::write(d.join("sub/leaf.conf"), "d = 4").unwrap();
        assert_eq!(
            walk_file(&d.join("top.conf")),
            [
                "top.conf:1: a = 1",
                "mid.conf:3: c = 3",
                "leaf.conf:1: d = 4",
                "top.conf:3: b = 2"
            ]
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn glob_matches_stars_and_bytes_only() {
        for (p, n, m) in [
            ("*.conf", "a.conf", true),
            ("*.conf", ".conf", true),
            ("*.conf", "a.conf.dpkg-old", false),
            ("a*", "a", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("*ab*ab", "ab", false),
            ("*ab*ab", "abab", true),
            ("x?.conf", "x1.conf", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), m, "{p} {n}");
        }
    }

    #[test]
    fn a_pattern_include_reads_the_matching_files_in_lexical_order() {
        let d = temp_dir("glob");
        let dropins = d.join("kerneld.d");
        std::fs::create_dir_all(dropins.join("sub.conf")).unwrap();
        std::fs::write(dropins.join("20-b.conf"), "b = 1\n").unwrap();
        std::fs::write(dropins.join("10-a.conf"), "a = 1\n").unwrap();
        std::fs::write(dropins.join("10-a.conf.dpkg-old"), "old = 1\n").unwrap();
        std::fs::write(dropins.join(".hidden.conf"), "hidden = 1\n").unwrap();
        std::fs::write(dropins.join("README"), "not = read\n").unwrap();
        std::fs::write(
            d.join("top.conf"),
            "x = 1\ninclude kerneld.d/*.conf\ninclude empty/*.conf\n\
             include kerneld.d/none-*.conf\ny = 2\n",
        )
        .unwrap();
        assert_eq!(
            walk_file(&d.join("top.conf")),
            [
                "top.conf:1: x = 1",
                "10-a.conf:1: a = 1",
                "20-b.conf:1: b = 1",
                "top.conf:5: y = 2"
            ]
        );
        // `*` in a directory part is refused, at the include line.
        std::fs::write(d.join("bad.conf"), "include */x.conf\n").unwrap();
        let got = walk_file(&d.join("bad.conf"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("bad.conf:1: error: ")
                && got[0].ends_with(
                    "`*` may stand only in the last part of the path (include DIR/*.conf)"
                ),
            "{got:?}"
        );
        // A drop-in that includes its own directory closes a loop.
        std::fs::write(dropins.join("30-self.conf"), "include *.conf\n").unwrap();
        let got = walk_file(&d.join("top.conf"));
        assert!(
            got.iter()
                .any(|g| g.contains("30-self.conf includes itself")),
            "{got:?}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn include_errors_name_the_include_line() {
        let d = temp_dir("err");
        let top = d.join("top.conf");
        std::fs::write(
            &top,
            "include\ninclude a b\ninclude missing.conf\ninclude /dev/zero\nx = 1\n",
        )
        .unwrap();
        let got = walk_file(&top);
        assert_eq!(got[0], "top.conf:1: error: include takes one path");
        assert_eq!(got[1], "top.conf:2: error: include takes one path");
        assert!(
            got[2].starts_with("top.conf:3: error: cannot read "),
            "{}",
            got[2]
        );
        assert!(got[3].contains("not a regular file"), "{}", got[3]);
        assert_eq!(got[4], "top.conf:5: x = 1");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_file_that_includes_itself_is_an_error_at_once() {
        let d = temp_dir("cycle");
        let top = d.join("self.conf");
        // Six times: bounded by depth alone, 6^8 reads.
        std::fs::write(
            &top,
            format!("x = 1\n{}y = 2\n", "include self.conf\n".repeat(6)),
        )
        .unwrap();
        let got = walk_file(&top);
        assert_eq!(got.len(), 8, "{got:?}");
        assert_eq!(got[0], "self.conf:1: x = 1");
        for (i, g) in got[1..7].iter().enumerate() {
            assert!(
                g.starts_with(&format!("self.conf:{}: error: ", i + 2)),
                "{g}"
            );
            assert!(
                g.ends_with("self.conf includes itself (directly or through other files)"),
                "{g}"
            );
        }
        assert_eq!(got[7], "self.conf:8: y = 2");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_loop_through_other_files_or_paths_is_an_error() {
        let d = temp_dir("loop");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.conf"), "a = 1\ninclude sub/b.conf\n").unwrap();
        std::fs::write(d.join("sub/b.conf"), "b = 1\ninclude ../a.conf\n").unwrap();
        assert_eq!(
            walk_file(&d.join("a.conf")),
            [
                "a.conf:1: a = 1",
                "b.conf:1: b = 1",
                &format!(
                    "b.conf:2: error: {} includes itself (directly or through other files)",
                    d.join("sub/../a.conf").display()
                ),
            ]
        );
        // Another name for the file being read: a symbolic link.
        std::os::unix::fs::symlink(d.join("c.conf"), d.join("link.conf")).unwrap();
        std::fs::write(d.join("c.conf"), "include link.conf\n").unwrap();
        let got = walk_file(&d.join("c.conf"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("link.conf includes itself"), "{got:?}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_file_included_twice_without_a_loop_is_read_twice() {
        let d = temp_dir("diamond");
        std::fs::write(d.join("top.conf"), "include a.conf\ninclude b.conf\n").unwrap();
        std::fs::write(d.join("a.conf"), "include common.conf\n").unwrap();
        std::fs::write(d.join("b.conf"), "include common.conf\n").unwrap();
        std::fs::write(d.join("common.conf"), "c = 1\n").unwrap();
        assert_eq!(
            walk_file(&d.join("top.conf")),
            ["common.conf:1: c = 1", "common.conf:1: c = 1"]
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn includes_nest_at_most_max_depth() {
        let d = temp_dir("depth");
        for i in 0..=MAX_INCLUDE_DEPTH + 1 {
            std::fs::write(
                d.join(format!("{i}.conf")),
                format!("n = {i}\ninclude {}.conf\n", i + 1),
            )
            .unwrap();
        }
        let got = walk_file(&d.join("0.conf"));
        assert_eq!(got.len(), MAX_INCLUDE_DEPTH + 2, "{got:?}");
        assert_eq!(
            got.last().unwrap(),
            &format!("{MAX_INCLUDE_DEPTH}.conf:2: error: includes nested too deeply (at most {MAX_INCLUDE_DEPTH} levels)")
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_walk_follows_at_most_max_includes() {
        let d = temp_dir("many");
        // Two levels of 17 includes each: 17 + 17 * 17 = 306 > 256, no loop.
        std::fs::write(d.join("top.conf"), "include mid.conf\n".repeat(17)).unwrap();
        std::fs::write(d.join("mid.conf"), "include leaf.conf\n".repeat(17)).unwrap();
        std::fs::write(d.join("leaf.conf"), "x = 1\n").unwrap();
        let got = walk_file(&d.join("top.conf"));
        let lines = got.iter().filter(|g| g.ends_with("x = 1")).count();
        let refused: Vec<_> = got.iter().filter(|g| g.contains("error")).collect();
        // Each mid.conf costs 18 includes: 14 whole ones are 252, the 15th
        // gets 3 of its 17 leaves, and the 2 mid.conf after it are refused.
        assert_eq!(MAX_INCLUDES, 256);
        assert_eq!(lines, 14 * 17 + 3, "{got:?}");
        assert_eq!(refused.len(), 14 + 2, "{got:?}");
        assert!(
            refused[0].ends_with(&format!(
                "more than {MAX_INCLUDES} includes in all; merge some of the files"
            )),
            "{refused:?}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_walk_reads_at_most_max_total_bytes() {
        let d = temp_dir("total");
        let big = vec![b'#'; MAX_FILE_BYTES as usize];
        std::fs::write(d.join("big.conf"), &big).unwrap();
        std::fs::write(d.join("top.conf"), "include big.conf\n".repeat(4)).unwrap();
        let got = walk_file(&d.join("top.conf"));
        // The top file's bytes count too: the fourth megabyte does not fit.
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("top.conf:4: error: cannot read "),
            "{got:?}"
        );
        assert!(
            got[0].ends_with(&format!(
                "the files read would pass {MAX_TOTAL_BYTES} bytes in all"
            )),
            "{got:?}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let d = temp_dir("size");
        let big = d.join("big.conf");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = read(&big).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let exact = d.join("exact.conf");
        std::fs::write(&exact, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert_eq!(read(&exact).unwrap().len(), MAX_FILE_BYTES as usize);
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read(&d.join("fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(read(&d)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_stop_from_the_visitor_ends_the_walk() {
        struct Stop(usize);
        impl Visitor for Stop {
            type Error = usize;
            fn line(&mut self, l: &Line<'_>) -> Result<(), usize> {
                self.0 += 1;
                if l.text == b"stop" {
                    Err(l.number)
                } else {
                    Ok(())
                }
            }
            fn include_failed(&mut self, e: IncludeError<'_>) -> Result<(), usize> {
                Err(e.line.number)
            }
        }
        let mut v = Stop(0);
        assert_eq!(walk(Path::new("t"), b"a\nstop\nb\n", &mut v), Err(2));
        assert_eq!(v.0, 2);
        assert_eq!(
            walk(Path::new("t"), b"a\ninclude\nb\n", &mut Stop(0)),
            Err(2)
        );
    }
}
