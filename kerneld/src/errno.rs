//! Error numbers as an administrator wants to read them.

use nix::errno::Errno;

/// Text for an errno, with what it means for module loading.
pub(crate) fn errno_text(errno: Errno) -> String {
    let plain = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let hint = match errno {
        Errno::ENOSYS => "the running kernel has no loadable module support",
        Errno::EPERM => "not permitted (kernel.modules_disabled=1, lockdown, or no CAP_SYS_MODULE)",
        Errno::EEXIST => "already in the kernel",
        Errno::ENOENT => "unknown symbol in module, or unknown parameter (see dmesg)",
        Errno::ENOEXEC => "invalid module format (built for another kernel?)",
        Errno::EKEYREJECTED => "module signature rejected",
        Errno::EBUSY | Errno::EAGAIN => "in use",
        Errno::ENODEV => "no such device (the hardware is not present)",
        Errno::EIO => "install command failed",
        _ => return plain,
    };
    format!("{hint} ({plain})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_errnos_explain_themselves() {
        assert!(errno_text(Errno::ENOSYS).contains("no loadable module support"));
        assert!(errno_text(Errno::ENOSYS).contains("Function not implemented"));
        assert_eq!(errno_text(Errno::EINVAL), "Invalid argument (os error 22)");
    }
}
