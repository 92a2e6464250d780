//! Error numbers as an administrator wants to read them.

/// Text for a positive errno, with what it means for module loading.
pub fn errno_text(errno: i32) -> String {
    let plain = std::io::Error::from_raw_os_error(errno).to_string();
    let hint = match errno {
        libc::ENOSYS => "the running kernel has no loadable module support",
        libc::EPERM => "not permitted (kernel.modules_disabled=1, lockdown, or no CAP_SYS_MODULE)",
        libc::EEXIST => "already in the kernel",
        libc::ENOENT => "unknown symbol in module, or unknown parameter (see dmesg)",
        libc::ENOEXEC => "invalid module format (built for another kernel?)",
        libc::EKEYREJECTED => "module signature rejected",
        libc::EBUSY | libc::EAGAIN => "in use",
        libc::ENODEV => "no such device (the hardware is not present)",
        libc::EIO => "install command failed",
        _ => return plain,
    };
    format!("{hint} ({plain})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_errnos_explain_themselves() {
        assert!(errno_text(libc::ENOSYS).contains("no loadable module support"));
        assert!(errno_text(libc::ENOSYS).contains("Function not implemented"));
        assert_eq!(errno_text(libc::EINVAL), "Invalid argument (os error 22)");
    }
}
