// The kerneld wire format as constants and functions on byte slices, with
// nothing beyond `core`: no allocation, no std, no unsafe.  Two places use
// this one file:
//
// - kmod-ipc, as the module `kmod_ipc::wire` (msg.rs and origin.rs build on
//   it; the tests of lib.rs check that msg.rs and key.rs agree with it);
// - the kernel module of kernel/module/, which `include!`s it, so the kernel
//   sends exactly what kerneld decodes.
//
// Being `include!`d, it holds no inner attributes or inner doc comments.

/// The default queue key, the bytes "kern".
pub const KEY: i32 = 0x6b65_726e;
/// Message type of a request to load a module.
pub const TYPE_REQUEST_MODULE: i64 = 2;
/// First reply id of the range the kernel uses.
pub const KERNEL_ID_FIRST: i64 = 0x7fff_0000;
/// Ids in the kernel's range: the kernel's ids wrap within
/// `KERNEL_ID_FIRST .. KERNEL_ID_FIRST + KERNEL_ID_COUNT`.
pub const KERNEL_ID_COUNT: i64 = 0x1_0000;
/// First reply id of kerneld-modprobe, the usermode helper, which adds its
/// pid: past the in-kernel sender's range, so that the two never wait on
/// the same id when both serve one kernel (the helper runs when the
/// in-kernel sender falls back).
pub const HELPER_ID_FIRST: i64 = KERNEL_ID_FIRST + KERNEL_ID_COUNT;
/// `version` of the new header.
pub const NEW_PROTOCOL_VERSION: i16 = 2;
/// Body bytes before the text with the old header (`long id`).
pub const HEADER_OLD_LEN: usize = 8;
/// Body bytes before the text with the new header (`long id; short version; short pid`).
pub const HEADER_NEW_LEN: usize = 12;
/// Longest module name the kernel asks for (`MODULE_NAME_LEN` - 1).
pub const NAME_MAX: usize = 55;

/// The requester's identity after the name's NUL (the *origin extension*).
///
/// A 1995 daemon reads the text as a C string and never sees what follows
/// its NUL, so a request stays a valid old request.  Layout, integers in
/// the machine's byte order like the header:
///
/// ```text
/// offset size  field
///      0    4  magic "kdor"
///      4    1  version (1)
///      5    1  c: length of comm (at most 15)
///      6    2  g: length of the cgroup path (u16, at most 256)
///      8    4  pid: thread group id in the initial pid namespace (u32)
///     12    4  uid in the initial user namespace (u32)
///     16    4  gid in the initial user namespace (u32)
///     20    c  comm, no NUL
///   20+c    g  cgroup v2 path, no NUL (empty: unknown)
/// ```
///
/// Bytes after `20 + c + g` are ignored (a later version may add fields).
pub const ORIGIN_MAGIC: [u8; 4] = *b"kdor";
/// Version of the layout above.
pub const ORIGIN_VERSION: u8 = 1;
/// Bytes before `comm`.
pub const ORIGIN_FIXED_LEN: usize = 20;
/// Longest `comm` (`TASK_COMM_LEN` - 1).
pub const ORIGIN_COMM_MAX: usize = 15;
/// Longest cgroup path carried; a longer one is sent empty.
pub const ORIGIN_CGROUP_MAX: usize = 256;
/// Longest request body with an origin.
pub const REQUEST_BODY_MAX: usize =
    HEADER_NEW_LEN + NAME_MAX + 1 + ORIGIN_FIXED_LEN + ORIGIN_COMM_MAX + ORIGIN_CGROUP_MAX;

/// The requester's identity, as the origin extension carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Thread group id (the process), initial pid namespace.
    pub pid: u32,
    /// User id, initial user namespace.
    pub uid: u32,
    /// Group id, initial user namespace.
    pub gid: u32,
    /// Command name, at most [`ORIGIN_COMM_MAX`] bytes.
    pub comm: &'a [u8],
    /// cgroup v2 path, at most [`ORIGIN_CGROUP_MAX`] bytes; empty if unknown.
    pub cgroup: &'a [u8],
}

/// Copy `src` to `buf[at..]`; the index after it, or `None` if it does not fit.
fn put(buf: &mut [u8], at: usize, src: &[u8]) -> Option<usize> {
    let end = at.checked_add(src.len())?;
    buf.get_mut(at..end)?.copy_from_slice(src);
    Some(end)
}

/// Lay out the body (what follows `mtype`) of a request to load `name`
/// with the new header, as the kernel sends it: `long id; short version;
/// short pid; name`, then, with an origin, a NUL and the extension.
/// Without an origin there is no NUL: the 1995 kernel sent `strlen(name)`
/// bytes of text and kerneld reads text to the end of the body.
///
/// `pid` is the requester's pid; the header keeps its low 16 bits.
/// Returns the body's length, or `None` if `buf` is too small, `name` is
/// empty, longer than [`NAME_MAX`] or holds a NUL, or `comm` is too long.
/// A cgroup path longer than [`ORIGIN_CGROUP_MAX`] is sent empty.
pub fn encode_request_body(
    buf: &mut [u8],
    id: i64,
    pid: u32,
    name: &[u8],
    origin: Option<&Origin<'_>>,
) -> Option<usize> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) {
        return None;
    }
    let mut at = put(buf, 0, &id.to_ne_bytes())?;
    at = put(buf, at, &NEW_PROTOCOL_VERSION.to_ne_bytes())?;
    // The C short: the low 16 bits, as the 1995 kernel's `short pid`.
    at = put(buf, at, &((pid & 0xffff) as u16).to_ne_bytes())?;
    at = put(buf, at, name)?;
    let Some(o) = origin else {
        return Some(at);
    };
    if o.comm.len() > ORIGIN_COMM_MAX || o.comm.contains(&0) {
        return None;
    }
    let cgroup = if o.cgroup.len() > ORIGIN_CGROUP_MAX {
        &[][..]
    } else {
        o.cgroup
    };
    at = put(buf, at, &[0])?;
    at = put(buf, at, &ORIGIN_MAGIC)?;
    // Both lengths fit: checked above.
    at = put(buf, at, &[ORIGIN_VERSION, o.comm.len() as u8])?;
    at = put(buf, at, &(cgroup.len() as u16).to_ne_bytes())?;
    at = put(buf, at, &o.pid.to_ne_bytes())?;
    at = put(buf, at, &o.uid.to_ne_bytes())?;
    at = put(buf, at, &o.gid.to_ne_bytes())?;
    at = put(buf, at, o.comm)?;
    put(buf, at, cgroup)
}

/// A native-endian u32 at `at`.
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// The header length of a body, decided as the 1996 daemon decided: new
/// when the body has 12 bytes or more and the short at offset 8 is 2.
pub fn header_len(body: &[u8]) -> usize {
    match body.get(HEADER_OLD_LEN..HEADER_NEW_LEN) {
        Some(v) if i16::from_ne_bytes([v[0], v[1]]) == NEW_PROTOCOL_VERSION => HEADER_NEW_LEN,
        _ => HEADER_OLD_LEN,
    }
}

/// What follows the text's first NUL in a request body (empty if nothing
/// or no NUL).
pub fn trailer(body: &[u8]) -> &[u8] {
    let rest = body.get(header_len(body)..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == 0) {
        Some(nul) => &rest[nul + 1..],
        None => &[],
    }
}

/// Parse an origin extension (the bytes after the name's NUL).  `None` if
/// they are not one: no magic, another version, lengths beyond the limits
/// or the bytes, a NUL in comm or cgroup.
pub fn parse_origin(t: &[u8]) -> Option<Origin<'_>> {
    if t.get(..4)? != ORIGIN_MAGIC || *t.get(4)? != ORIGIN_VERSION {
        return None;
    }
    let c = usize::from(*t.get(5)?);
    let g = usize::from(u16::from_ne_bytes([*t.get(6)?, *t.get(7)?]));
    if c > ORIGIN_COMM_MAX || g > ORIGIN_CGROUP_MAX {
        return None;
    }
    let comm = t.get(ORIGIN_FIXED_LEN..ORIGIN_FIXED_LEN + c)?;
    let cgroup = t.get(ORIGIN_FIXED_LEN + c..ORIGIN_FIXED_LEN + c + g)?;
    if comm.contains(&0) || cgroup.contains(&0) {
        return None;
    }
    Some(Origin {
        pid: u32_at(t, 8)?,
        uid: u32_at(t, 12)?,
        gid: u32_at(t, 16)?,
        comm,
        cgroup,
    })
}

/// The status of a reply body (its `id` field), if it has one.
pub fn reply_status(body: &[u8]) -> Option<i64> {
    let s = body.get(..8)?;
    Some(i64::from_ne_bytes([
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ]))
}

/// The reply id of the `n`th kernel request: within the kernel's range,
/// wrapping.
pub fn kernel_id(n: u32) -> i64 {
    KERNEL_ID_FIRST + (i64::from(n) % KERNEL_ID_COUNT)
}
