//! The shim (kerneld-modprobe) as the kernel runs it, with a configuration
//! of its own and a stand-in modprobe that records its arguments.

use crate::fake::{bin, run, Outcome, TempDir, LIMIT};
use kmod_ipc::Key;
use std::path::PathBuf;
use std::process::Command;

/// A temp dir with the shim's configuration, its log, and a stand-in for
/// the real modprobe that records its arguments.
pub struct Setup {
    pub dir: TempDir,
    /// The stand-in modprobe.
    pub modprobe: PathBuf,
}

impl Setup {
    /// `config` is appended to `shim-modprobe = <the stand-in>`.
    pub fn new(config: &str) -> Setup {
        let dir = TempDir::new();
        let argv = dir.join("argv");
        let modprobe = dir.script(
            "modprobe",
            &format!("printf '%s\\n' \"$@\" > '{}'\nexit 0\n", argv.display()),
        );
        std::fs::write(
            dir.join("kerneld.conf"),
            format!("shim-modprobe = {}\n{config}", modprobe.display()),
        )
        .unwrap();
        Setup { dir, modprobe }
    }

    /// The shim with the kernel's environment and the given arguments.
    pub fn command(&self, key: Key, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("kerneld-modprobe"));
        cmd.env_clear()
            .env("HOME", "/")
            .env("TERM", "linux")
            .env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")
            .env("KERNELD_KEY", key.to_string())
            .env("KERNELD_CONFIG", self.dir.join("kerneld.conf"))
            .env("KERNELD_SHIM_LOG", self.dir.join("log"))
            .args(args);
        cmd
    }

    /// Run `kerneld-modprobe -q -- NAME` as the kernel does.
    pub fn request(&self, key: Key, name: &str) -> Outcome {
        run(&mut self.command(key, &["-q", "--", name]), LIMIT)
    }

    /// The stand-in modprobe's arguments, if it ran.
    pub fn modprobe_argv(&self) -> Option<Vec<String>> {
        std::fs::read_to_string(self.dir.join("argv"))
            .ok()
            .map(|s| s.lines().map(String::from).collect())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}
