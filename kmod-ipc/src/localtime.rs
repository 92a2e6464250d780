//! Local wall-clock time for the operator's text (kdstat's heading,
//! kerneld's `why`), shared so the one unsafe block is written once.
//! libc's own conversion is used: it reads the zone the system is set
//! to, as `date` does, and adds no time crate to the binaries.

/// `unix` seconds as local `YYYY-MM-DD HH:MM:SS`; `None` if the C
/// library cannot convert it.
pub fn local_time(unix: i64) -> Option<String> {
    let mut buf = [0u8; 64];
    let t = unix as libc::time_t;
    // SAFETY: localtime_r and strftime get valid pointers; strftime writes
    // at most buf.len() bytes and returns how many.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%Y-%m-%d %H:%M:%S".as_ptr(),
            &tm,
        )
    };
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The current time, as [`local_time`] writes it.
pub fn local_now() -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    local_time(now.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_written_in_full() {
        let t = local_time(86_400 * 365).unwrap();
        assert_eq!(t.len(), "1971-01-01 00:00:00".len(), "{t}");
        assert!(
            t.starts_with("1970-12-31") || t.starts_with("1971-01-01"),
            "{t}"
        );
    }
}
