//! What enforce mode can judge on this host, worked out once at start:
//! whether libkmod's loaders in process (systemd-udevd, kerneld itself)
//! hand the kernel a compressed module as a file (finit_module, judged by
//! content) or as an image from memory (init_module, with no file: judged
//! wholesale by `module-loads-init-module`).
//!
//! kmod 31 and later pass a compressed file to finit_module() when the
//! kernel decompresses that format itself (/sys/module/compression);
//! otherwise, and always before kmod 31 (Debian 12 has kmod 30), libkmod
//! decompresses in process and calls init_module().

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// The system call that carries a module to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub(crate) enum Syscall {
    /// A file: judged by its content.
    FinitModule,
    /// An image from memory: no file, judged by `module-loads-init-module`.
    InitModule,
}

/// Why libkmod loads compressed modules through init_module() here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// kmod before 31 never hands the kernel a compressed file.
    OldKmod(u32),
    /// The kernel does not decompress this format itself (None: no
    /// in-kernel decompression at all).
    KernelCannot {
        format: String,
        kernel: Option<String>,
    },
}

/// How this host's module tree reaches the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// `kmod --version`; None when it could not be run or read.
    pub(crate) kmod_version: Option<u32>,
    /// The format the kernel decompresses (/sys/module/compression:
    /// `xz`, `zstd`, `gzip`); None when it decompresses none.
    pub(crate) kernel_decompresses: Option<String>,
    /// Module files of the tree, and of them compressed, by format.
    pub(crate) module_files: usize,
    pub(crate) compressed: BTreeMap<String, usize>,
    /// Why the module tree could not be listed.
    pub(crate) tree_error: Option<String>,
}

/// The format of a module file's compression, as /sys/module/compression
/// names it; None for a plain `.ko`.
pub(crate) fn format_of(path: &str) -> Option<&'static str> {
    if path.ends_with(".ko.xz") {
        Some("xz")
    } else if path.ends_with(".ko.zst") {
        Some("zstd")
    } else if path.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    }
}

/// `30` from `kmod version 30` (its first line); None otherwise.
pub(crate) fn parse_kmod_version(out: &str) -> Option<u32> {
    let v = out.lines().next()?.trim().strip_prefix("kmod version ")?;
    // Releases are integers; a distribution may append to them (`30-1`).
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The kmod version of `kmod --version`, the tool built from the same
/// source and release as the libkmod the loaders link; None when it cannot
/// be run.
fn kmod_version() -> Option<u32> {
    let kmod = ["/usr/bin/kmod", "/bin/kmod", "/usr/sbin/kmod", "/sbin/kmod"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("kmod");
    let out = Command::new(kmod)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_kmod_version(&String::from_utf8_lossy(&out.stdout))
}

impl Host {
    /// Look at this host: `kmod --version`, /sys/module/compression and
    /// the module files under `module_dir`.
    pub(crate) fn read(module_dir: &Path) -> Host {
        let kernel = std::fs::read_to_string("/sys/module/compression")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        match super::verdicts::module_files(module_dir) {
            Ok(files) => Host::of(kmod_version(), kernel, &files),
            Err(e) => Host {
                tree_error: Some(format!("{}: {e}", module_dir.display())),
                ..Host::of(kmod_version(), kernel, &[])
            },
        }
    }

    /// The facts of a tree of `files`.
    pub(crate) fn of(
        kmod_version: Option<u32>,
        kernel_decompresses: Option<String>,
        files: &[std::path::PathBuf],
    ) -> Host {
        let mut compressed = BTreeMap::new();
        for f in files {
            if let Some(fmt) = f.to_str().and_then(format_of) {
                *compressed.entry(fmt.to_string()).or_insert(0) += 1;
            }
        }
        Host {
            kmod_version,
            kernel_decompresses,
            module_files: files.len(),
            compressed,
            tree_error: None,
        }
    }

    pub(crate) fn compressed_files(&self) -> usize {
        self.compressed.values().sum()
    }

    /// How libkmod loads this tree's compressed modules, and why when by
    /// init_module(); None when the tree has none, or kmod's version is
    /// unknown and the kernel could decompress them.
    pub(crate) fn compressed_loads(&self) -> Option<(Syscall, Option<Cause>)> {
        let format = self
            .compressed
            .keys()
            .find(|f| self.kernel_decompresses.as_deref() != Some(f.as_str()));
        if self.compressed.is_empty() {
            return None;
        }
        if let Some(format) = format {
            return Some((
                Syscall::InitModule,
                Some(Cause::KernelCannot {
                    format: format.clone(),
                    kernel: self.kernel_decompresses.clone(),
                }),
            ));
        }
        match self.kmod_version? {
            v if v < 31 => Some((Syscall::InitModule, Some(Cause::OldKmod(v)))),
            _ => Some((Syscall::FinitModule, None)),
        }
    }

    /// What enforce mode judges here, in words (the start line and the
    /// status).
    pub(crate) fn describe(&self) -> String {
        let n = self.compressed_files();
        let kmod = self
            .kmod_version
            .map_or_else(|| "kmod of unknown version".into(), |v| format!("kmod {v}"));
        if let Some(e) = &self.tree_error {
            return format!("nothing: the module tree cannot be read ({e})");
        }
        match self.compressed_loads() {
            None if self.module_files == 0 => "nothing: the module tree has no module files".into(),
            None if n == 0 => format!(
                "the {} module files are not compressed: every loader hands them to \
                 finit_module(), judged by content",
                self.module_files
            ),
            None => format!(
                "{n} of the {} module files are compressed and the kernel decompresses {}; \
                 whether libkmod loaders (systemd-udevd, kerneld) pass them to \
                 finit_module() (kmod 31 and later, judged by content) or init_module() \
                 (before 31, judged by module-loads-init-module) is unknown: `kmod --version` \
                 could not be read",
                self.module_files,
                self.kernel_decompresses.as_deref().unwrap_or("none"),
            ),
            Some((Syscall::FinitModule, _)) => format!(
                "{n} of the {} module files are compressed; {kmod} hands them to finit_module() \
                 and the kernel decompresses them: every load of a module file is judged by \
                 content",
                self.module_files
            ),
            Some((Syscall::InitModule, cause)) => {
                let why = match cause {
                    Some(Cause::OldKmod(v)) => {
                        format!("kmod {v} (before 31) decompresses them in process")
                    }
                    Some(Cause::KernelCannot { format, kernel }) => format!(
                        "the kernel does not decompress {format} ({})",
                        kernel.map_or_else(
                            || "no /sys/module/compression".into(),
                            |k| format!("it decompresses {k}")
                        )
                    ),
                    None => String::new(),
                };
                format!(
                    "{n} of the {} module files are compressed and {why}: libkmod in process \
                     (systemd-udevd's coldplug and hotplug, kerneld) loads those through \
                     init_module(), which carries no file: enforce mode judges them wholesale by \
                     module-loads-init-module, not by content (a loader's init_module() fallback \
                     after a refused finit_module() is refused)",
                    self.module_files
                )
            }
        }
    }
}

/// The host facts in the status document.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct HostDocument {
    /// kmod's version (`kmod --version`); null when it could not be read.
    pub(crate) kmod_version: Option<u32>,
    /// The compression the kernel undoes itself (/sys/module/compression:
    /// `xz`, `zstd`, `gzip`); null when none.
    pub(crate) kernel_decompresses: Option<String>,
    /// Module files in the module tree.
    pub(crate) module_files: usize,
    /// Of them compressed, by format (`xz` -> count).
    pub(crate) compressed_files: BTreeMap<String, usize>,
    /// How libkmod loaders hand a compressed module to the kernel here:
    /// `finit_module` (a file, judged by content) or `init_module` (no
    /// file, judged by module-loads-init-module); null when the tree has
    /// none or it is unknown.
    pub(crate) compressed_loads: Option<Syscall>,
    /// The same in words.
    pub(crate) summary: String,
}

impl HostDocument {
    pub(crate) fn of(h: &Host) -> HostDocument {
        HostDocument {
            kmod_version: h.kmod_version,
            kernel_decompresses: h.kernel_decompresses.clone(),
            module_files: h.module_files,
            compressed_files: h.compressed.clone(),
            compressed_loads: h.compressed_loads().map(|(s, _)| s),
            summary: h.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tree(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn kmod_versions_are_read_from_the_first_line() {
        assert_eq!(
            parse_kmod_version("kmod version 30\n+ZSTD +XZ -ZLIB +LIBCRYPTO -EXPERIMENTAL\n"),
            Some(30)
        );
        assert_eq!(parse_kmod_version("kmod version 34.2\n"), Some(34));
        assert_eq!(parse_kmod_version("kmod version x\n"), None);
        assert_eq!(parse_kmod_version(""), None);
    }

    #[test]
    fn bookworm_loads_compressed_modules_through_init_module() {
        let t = tree(&["/m/a.ko.xz", "/m/b.ko.xz", "/m/c.ko"]);
        let h = Host::of(Some(30), Some("xz".into()), &t);
        assert_eq!(h.compressed_files(), 2);
        assert_eq!(
            h.compressed_loads(),
            Some((Syscall::InitModule, Some(Cause::OldKmod(30))))
        );
        let d = h.describe();
        assert!(
            d.starts_with("2 of the 3 module files are compressed and kmod 30"),
            "{d}"
        );
        assert!(
            d.contains("judges them wholesale by module-loads-init-module"),
            "{d}"
        );
    }

    #[test]
    fn trixie_hands_them_to_finit_module_when_the_kernel_decompresses() {
        let t = tree(&["/m/a.ko.xz"]);
        let h = Host::of(Some(34), Some("xz".into()), &t);
        assert_eq!(h.compressed_loads(), Some((Syscall::FinitModule, None)));
        assert!(h.describe().contains("judged by content"));
        // A format the kernel does not undo: init_module, whatever kmod.
        let t = tree(&["/m/a.ko.zst"]);
        let h = Host::of(Some(34), Some("xz".into()), &t);
        assert_eq!(
            h.compressed_loads(),
            Some((
                Syscall::InitModule,
                Some(Cause::KernelCannot {
                    format: "zstd".into(),
                    kernel: Some("xz".into())
                })
            ))
        );
        let h = Host::of(None, None, &t);
        assert!(h.describe().contains("no /sys/module/compression"));
    }

    #[test]
    fn a_plain_tree_or_an_unknown_kmod_says_so() {
        let h = Host::of(Some(30), None, &tree(&["/m/a.ko"]));
        assert_eq!(h.compressed_loads(), None);
        assert!(h.describe().contains("not compressed"));
        let h = Host::read(std::path::Path::new("/nonexistent/kerneld-tree"));
        assert!(
            h.describe().starts_with(
                "nothing: the module tree cannot be read (/nonexistent/kerneld-tree: "
            ),
            "{}",
            h.describe()
        );
        let h = Host::of(None, Some("xz".into()), &tree(&["/m/a.ko.xz"]));
        assert_eq!(h.compressed_loads(), None);
        assert!(h.describe().contains("is unknown"));
    }
}
