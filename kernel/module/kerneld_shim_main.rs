// SPDX-License-Identifier: GPL-2.0

//! kerneld_shim: `request_module()` posts a `struct kerneld_msg` to
//! kerneld's System V message queue and waits for the answer, as Linux
//! 1.3.57 to 2.1.89 did, with nothing executed.
//!
//! It registers as the kernel's request_module() handler (`kernel::kmod`)
//! and talks to the queue through the kernel's own queue clients
//! (`kernel::ipc_msg`), both added by kernel/patches/.  The requester only
//! describes its request: a kernel thread (a workqueue,
//! kerneld_shim_glue.c) sends it and waits for the answer, so that no LSM
//! judges the requester's domain for the kernel's own upcall, and the
//! requester waits for that thread killably.  For each request:
//!
//! - it sends type 2 (request module) with the new header (version 2, the
//!   requester's pid in 16 bits), the name, then a NUL and the *origin
//!   extension* (pid, uid, gid, comm, cgroup) that a 1995 daemon never
//!   sees; the layout is kmod-ipc's `wire.rs`, included below;
//! - `request_module()` gets a reply id in the kernel's range (0x7fff0000
//!   and 65,535 more), from a random start at each load, never one whose
//!   late answer may still come; `request_module_nowait()` sends id 0 and
//!   returns once it is sent;
//! - no queue at the key, a queue full or removed: the usermode helper runs
//!   as on a stock kernel (or, with `fallback=N`, the request fails);
//! - a queue that is not root's with mode 0600 or stricter is no kerneld:
//!   nothing is sent to it, and the helper runs (or, with `fallback=N`,
//!   the request fails);
//! - a request still unread after `read_wait_ms` (a dead kerneld left its
//!   queue behind) is taken back from the queue, so it is never served
//!   twice, and the helper runs;
//! - once kerneld has read it, the answer is awaited up to `reply_wait_ms`
//!   in all; a requester killed meanwhile returns at once, and the worker
//!   still takes the answer;
//! - a kerneld that registered itself (/sys/kernel/kerneld_shim/server) is
//!   watched meanwhile: should it die holding the request and no other
//!   kerneld be registered, the request is taken back if still queued,
//!   else counted in `fallback_died`, and the helper runs (or, with
//!   `fallback=N`, the request fails) within `SLICE_MS` of its death, in
//!   the first wait too;
//! - while a suspend starts, requests take the usermode helper's path, and
//!   suspend waits for those in flight (kerneld_shim_glue.c);
//! - the answer's status maps to what the helper path returns: 0 when
//!   loaded, 256 (modprobe's exit status 1) when not.
//!
//! Settings are module parameters, counters are files in
//! /sys/kernel/kerneld_shim/ (kerneld_shim_glue.c).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering};
use kernel::error::code::{EAGAIN, EINTR, ENOENT, EPERM, ETIME};
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_void};
use kernel::ipc_msg::Queue;
use kernel::time::{msecs_to_jiffies, Jiffies};
use kernel::{c_str, kmod, prelude::*, str::CStr};

/// The wire format, shared with kerneld (kmod-ipc/src/wire.rs).
#[allow(dead_code, unreachable_pub)]
mod wire {
    include!("wire.rs");
}

// The kernel crate moved after 6.12; Kbuild sets `kerneld_kernel_7` on 7.x
// (the series of kernel/patches-7.3/).  Only these differ:
// - `module!` takes `authors:`, not `author:`;
// - `CStr` is `core::ffi::CStr`, whose bytes are `to_bytes()`.
#[cfg(not(kerneld_kernel_7))]
module! {
    type: KerneldShim,
    name: "kerneld_shim",
    author: "the kerneld project",
    description: "request_module() through kerneld's message queue, with nothing executed",
    license: "GPL",
}

#[cfg(kerneld_kernel_7)]
module! {
    type: KerneldShim,
    name: "kerneld_shim",
    authors: ["the kerneld project"],
    description: "request_module() through kerneld's message queue, with nothing executed",
    license: "GPL",
}

/// The bytes of `s` before its NUL.
#[cfg(not(kerneld_kernel_7))]
fn cstr_bytes(s: &CStr) -> &[u8] {
    s.as_bytes()
}

/// The bytes of `s` before its NUL.
#[cfg(kerneld_kernel_7)]
fn cstr_bytes(s: &CStr) -> &[u8] {
    s.to_bytes()
}

// The module's own C glue (kerneld_shim_glue.c).
extern "C" {
    fn kerneld_shim_setting(which: c_uint) -> c_long;
    fn kerneld_shim_count(which: c_uint);
    fn kerneld_shim_whoami(
        ids: *mut u32,
        comm: *mut c_char,
        comm_size: usize,
        cgroup: *mut c_char,
        cgroup_size: usize,
    );
    fn kerneld_shim_warn(what: *const c_char, name: *const c_char, err: c_long);
    fn kerneld_shim_random() -> u32;
    fn kerneld_shim_offload(
        name: *const c_char,
        body: *const u8,
        len: usize,
        id: c_long,
        wait: bool,
        ret: *mut c_int,
    ) -> bool;
    fn kerneld_shim_start() -> c_int;
    fn kerneld_shim_stop();
    fn kerneld_shim_server_get() -> *mut c_void;
    fn kerneld_shim_server_alive(pid: *mut c_void) -> bool;
    fn kerneld_shim_server_put(pid: *mut c_void);
}

// The wire format's longs (mtype, reply id, status) are the kernel's.
const _: () = assert!(
    core::mem::size_of::<c_long>() == 8,
    "kerneld's wire format needs a 64-bit long"
);

/// Settings, numbered as in kerneld_shim_glue.c.
#[derive(Clone, Copy)]
enum Setting {
    Key = 0,
    ReadWaitMs = 1,
    ReplyWaitMs = 2,
    Fallback = 3,
}

fn setting(s: Setting) -> c_long {
    // SAFETY: a plain read of a module parameter, any number is valid.
    unsafe { kerneld_shim_setting(s as c_uint) }
}

/// Counters, numbered as in kerneld_shim_glue.c.
#[derive(Clone, Copy)]
enum Counter {
    Requests = 0,
    Answered = 1,
    Failed = 2,
    Nowait = 3,
    FallbackNoQueue = 4,
    FallbackUnread = 5,
    FallbackFull = 6,
    FallbackGone = 7,
    UntrustedQueue = 8,
    TimedOut = 9,
    Interrupted = 10,
    LateAnswers = 11,
    FallbackDied = 13,
}

fn count(c: Counter) {
    // SAFETY: an atomic increment in the glue, any number is valid.
    unsafe { kerneld_shim_count(c as c_uint) }
}

fn warn(what: &CStr, name: &CStr, err: c_int) {
    // SAFETY: both strings are NUL-terminated and live during the call.
    unsafe { kerneld_shim_warn(what.as_char_ptr(), name.as_char_ptr(), err as c_long) }
}

/// What `__request_module()` returns when the helper's modprobe exits 1.
const NOT_LOADED: c_int = 1 << 8;
/// Between the worker and the glue: let the usermode helper run
/// (`KD_NOT_SERVED` in kerneld_shim_glue.c).
const NOT_SERVED: c_int = c_int::MIN;

/// Requests sent so far; the reply id is derived from it.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Answers nobody waits for any more (kerneld answered after
/// `reply_wait_ms`): (queue, reply id) pairs, id 0 when free.  They are
/// taken out of the queue on later requests, so that they do not fill
/// kerneld's queue, and their ids are not given out meanwhile, so that a
/// stale answer never reaches another request.
const LATE_SLOTS: usize = 64;
static LATE_QUEUE: [AtomicI32; LATE_SLOTS] = [const { AtomicI32::new(0) }; LATE_SLOTS];
static LATE_ID: [AtomicI64; LATE_SLOTS] = [const { AtomicI64::new(0) }; LATE_SLOTS];

fn abandon(queue: Queue, id: i64) {
    for (q, slot) in LATE_QUEUE.iter().zip(LATE_ID.iter()) {
        if slot
            .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            q.store(queue.id(), Ordering::Release);
            slot.store(id, Ordering::Release);
            return;
        }
    }
    // All slots taken: that answer stays in the queue until kerneld stops.
}

fn is_late(id: i64) -> bool {
    LATE_ID
        .iter()
        .any(|slot| slot.load(Ordering::Acquire) == id)
}

/// The next reply id, skipping those whose answer may still come.
fn next_id() -> i64 {
    loop {
        let id = wire::kernel_id(SEQUENCE.fetch_add(1, Ordering::Relaxed));
        if !is_late(id) {
            return id;
        }
    }
}

fn take_late_answers() {
    for (q, slot) in LATE_QUEUE.iter().zip(LATE_ID.iter()) {
        let id = slot.load(Ordering::Acquire);
        if id <= 0 {
            continue;
        }
        let queue = Queue::from_id(q.load(Ordering::Acquire));
        let mut buf = [0u8; 16];
        // Timeout 0: never waits.
        match queue.receive(id, &mut buf, 0) {
            Err(e) if e == EAGAIN => continue,
            Ok(_) => count(Counter::LateAnswers),
            Err(_) => {}
        }
        // Taken, or the queue is gone: free the slot.
        let _ = slot.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// The requester's identity (the current task), read by the C glue.
struct Whoami {
    ids: [u32; 3],
    comm: [u8; 16],
    cgroup: [u8; wire::ORIGIN_CGROUP_MAX + 1],
}

impl Whoami {
    fn current() -> Self {
        let mut w = Whoami {
            ids: [0; 3],
            comm: [0; 16],
            cgroup: [0; wire::ORIGIN_CGROUP_MAX + 1],
        };
        // SAFETY: three u32s and two byte buffers of the sizes given, all
        // writable; the glue NUL-terminates both strings.
        unsafe {
            kerneld_shim_whoami(
                w.ids.as_mut_ptr(),
                w.comm.as_mut_ptr().cast::<c_char>(),
                w.comm.len(),
                w.cgroup.as_mut_ptr().cast::<c_char>(),
                w.cgroup.len(),
            )
        };
        w
    }
}

/// The bytes of a NUL-terminated buffer before its NUL.
fn until_nul(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// Without kerneld: the helper runs, unless `fallback=N`.
fn fall_back(c: Counter, what: &CStr, name: &CStr, err: c_int) -> c_int {
    count(c);
    warn(what, name, err);
    if setting(Setting::Fallback) != 0 {
        NOT_SERVED
    } else {
        NOT_LOADED
    }
}

fn jiffies(ms: c_long) -> Jiffies {
    msecs_to_jiffies(u32::try_from(ms.max(0)).unwrap_or(u32::MAX))
}

/// The kerneld registered as serving the key, held by reference (a
/// `struct pid` in the glue): a reused pid never passes for it.
struct Server(NonNull<c_void>);

impl Server {
    /// The registered kerneld, if there is one and it lives.
    fn registered() -> Option<Self> {
        // SAFETY: a plain call; a non-null result is a reference we own.
        NonNull::new(unsafe { kerneld_shim_server_get() }).map(Server)
    }

    fn alive(&self) -> bool {
        // SAFETY: `self.0` is a reference taken in `registered`, held.
        unsafe { kerneld_shim_server_alive(self.0.as_ptr()) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `registered`, put once.
        unsafe { kerneld_shim_server_put(self.0.as_ptr()) }
    }
}

/// How often a request kerneld has read checks that kerneld still lives:
/// what its death costs the requester at most, before the fallback.
const SLICE_MS: c_long = 250;

/// What awaiting kerneld's answer came to.
enum Awaited {
    /// The queue's answer: a reply's length or why there is none.
    Got(Result<usize>),
    /// The kerneld holding the request died, none other is registered.
    Died,
}

/// Describe one request_module() in the requester's context (who asks)
/// and hand it to the worker: see the crate documentation.  `None`: let
/// the usermode helper run.
fn serve(name: &CStr, wait: bool) -> Option<c_int> {
    count(Counter::Requests);
    let id = if wait { next_id() } else { 0 };
    let who = Whoami::current();
    let origin = wire::Origin {
        pid: who.ids[0],
        uid: who.ids[1],
        gid: who.ids[2],
        comm: until_nul(&who.comm),
        cgroup: until_nul(&who.cgroup),
    };
    let mut body = [0u8; wire::REQUEST_BODY_MAX];
    let Some(len) =
        wire::encode_request_body(&mut body, id, origin.pid, cstr_bytes(name), Some(&origin))
    else {
        // A name the protocol cannot carry: as without kerneld.
        let r = fall_back(
            Counter::FallbackNoQueue,
            c_str!("name not sendable"),
            name,
            0,
        );
        return (r != NOT_SERVED).then_some(r);
    };
    let mut ret: c_int = 0;
    // SAFETY: `name` is NUL-terminated, `body[..len]` initialised, `ret`
    // writable; the glue copies what it keeps before returning.
    let served = unsafe {
        kerneld_shim_offload(
            name.as_char_ptr(),
            body.as_ptr(),
            len,
            id as c_long,
            wait,
            &mut ret,
        )
    };
    served.then_some(ret)
}

/// One exchange with kerneld, in the worker (a kernel thread, under kernel
/// credentials): send, wait, take back an unread request.  Returns what
/// `__request_module()` returns, or `NOT_SERVED`.
///
/// # Safety
///
/// `name` is NUL-terminated and `body` readable for `len` bytes, for the
/// call.
#[no_mangle]
unsafe extern "C" fn kerneld_shim_exchange(
    name: *const c_char,
    body: *const u8,
    len: usize,
    id: c_long,
    wait: bool,
) -> c_int {
    // SAFETY: see the function's safety section.
    let name = unsafe { CStr::from_char_ptr(name) };
    take_late_answers();
    let id = id as i64; // c_long is 64-bit: checked at build time above
    let key = setting(Setting::Key) as c_int;
    // SAFETY: `body` is readable for `len` bytes (the caller's promise).
    let body = unsafe { core::slice::from_raw_parts(body, len) };
    // Taken before the send: whoever reads the request is this kerneld or
    // a successor that registered since.
    let server = if wait { Server::registered() } else { None };
    let queue = match Queue::send(key, wire::TYPE_REQUEST_MODULE, body) {
        Ok(queue) => queue,
        // A queue someone else made at the key is no kerneld: refusing
        // would let any local user switch off module loading for the
        // host while kerneld is down (`ipcs -q` shows its owner).
        Err(e) if e == EPERM => {
            return fall_back(
                Counter::UntrustedQueue,
                c_str!("the queue at kerneld's key is not root's with mode 0600 (ipcs -q shows its owner): as without kerneld"),
                name,
                e.to_errno(),
            )
        }
        Err(e) if e == ENOENT => {
            return fall_back(
                Counter::FallbackNoQueue,
                c_str!("no kerneld queue"),
                name,
                e.to_errno(),
            )
        }
        Err(e) if e == EAGAIN => {
            return fall_back(
                Counter::FallbackFull,
                c_str!("kerneld's queue is full"),
                name,
                e.to_errno(),
            )
        }
        Err(e) => {
            return fall_back(
                Counter::FallbackGone,
                c_str!("cannot send to kerneld"),
                name,
                e.to_errno(),
            )
        }
    };
    if !wait {
        count(Counter::Nowait);
        return 0;
    }

    let read_wait = setting(Setting::ReadWaitMs);
    let reply_wait = setting(Setting::ReplyWaitMs).max(read_wait);
    let mut reply = [0u8; 64];

    let mut watched = server;
    let mut died = false;

    // First wait: kerneld answers quick requests within it.  Should the
    // watched kerneld die meanwhile, the withdraw below comes at once.
    let mut r = match await_answer(queue, id, &mut reply, read_wait, &mut watched) {
        Awaited::Got(got) => got,
        Awaited::Died => {
            died = true;
            Err(EAGAIN)
        }
    };
    if matches!(r, Err(e) if e == EAGAIN) {
        match queue.withdraw(wire::TYPE_REQUEST_MODULE, id) {
            // Nobody read it: no kerneld serves this queue.
            Ok(true) => return unread(name),
            // kerneld has it: wait for the answer, up to reply_wait in all.
            Ok(false) => {
                let rest = reply_wait - read_wait;
                if !died {
                    match await_answer(queue, id, &mut reply, rest, &mut watched) {
                        Awaited::Got(got) => r = got,
                        Awaited::Died => died = true,
                    }
                }
                if died {
                    match queue.withdraw(wire::TYPE_REQUEST_MODULE, id) {
                        // Put back (a takeover keeps read requests), unserved.
                        Ok(true) => return unread(name),
                        Ok(false) => {
                            // An answer sent just before the death counts.
                            r = queue.receive(id, &mut reply, 0);
                            if matches!(r, Err(e) if e == EAGAIN) {
                                abandon(queue, id);
                                return fall_back(
                                    Counter::FallbackDied,
                                    c_str!("kerneld died before answering"),
                                    name,
                                    ETIME.to_errno(),
                                );
                            }
                        }
                        Err(e) => return gone(name, e),
                    }
                }
            }
            Err(e) => return gone(name, e),
        }
    }
    match r {
        Ok(n) => {
            count(Counter::Answered);
            if wire::reply_status(&reply[..n.min(reply.len())]) == Some(0) {
                0
            } else {
                count(Counter::Failed);
                NOT_LOADED
            }
        }
        Err(e) if e == EAGAIN => {
            count(Counter::TimedOut);
            abandon(queue, id);
            warn(
                c_str!("no answer from kerneld in time"),
                name,
                ETIME.to_errno(),
            );
            NOT_LOADED
        }
        Err(e) if e == EINTR => {
            // A kernel thread is not killed; should it be, as for a killed
            // requester: unread, take it back; read, remove the answer later.
            count(Counter::Interrupted);
            if queue.withdraw(wire::TYPE_REQUEST_MODULE, id) != Ok(true) {
                abandon(queue, id);
            }
            e.to_errno()
        }
        // EIDRM, EINVAL: kerneld stopped and removed its queue meanwhile.
        Err(e) => gone(name, e),
    }
}

/// A request nobody read (or that came back unread): taken back, no
/// kerneld serves this queue.
fn unread(name: &CStr) -> c_int {
    fall_back(
        Counter::FallbackUnread,
        c_str!("request unread by kerneld, taken back"),
        name,
        ETIME.to_errno(),
    )
}

/// kerneld stopped and removed its queue.
fn gone(name: &CStr, e: Error) -> c_int {
    fall_back(
        Counter::FallbackGone,
        c_str!("kerneld's queue removed"),
        name,
        e.to_errno(),
    )
}

/// Wait up to `ms` for the answer to `id`.  While a registered kerneld is
/// watched, in slices of `SLICE_MS`, checking after each empty one that it
/// lives.
fn await_answer(
    queue: Queue,
    id: i64,
    reply: &mut [u8],
    ms: c_long,
    watched: &mut Option<Server>,
) -> Awaited {
    let mut left = ms;
    loop {
        let Some(server) = watched.as_ref() else {
            return Awaited::Got(queue.receive(id, reply, jiffies(left).max(1)));
        };
        let slice = left.min(SLICE_MS);
        let r = queue.receive(id, reply, jiffies(slice).max(1));
        left -= slice;
        if left <= 0 || !matches!(r, Err(e) if e == EAGAIN) {
            return Awaited::Got(r);
        }
        if !server.alive() {
            // A successor that took the queue over may serve the request:
            // watch it rather than risk a load performed twice.
            match Server::registered() {
                Some(next) => *watched = Some(next),
                None => return Awaited::Died,
            }
        }
    }
}

/// The handler `__request_module()` calls (include/linux/kmod.h).
struct Handler;

impl kmod::Handler for Handler {
    fn request_module(name: &CStr, wait: bool) -> Option<i32> {
        serve(name, wait)
    }
}

/// The glue's workqueue and PM notifier (kerneld_shim_glue.c).
struct Workers;

impl Workers {
    fn start() -> Result<Self> {
        // SAFETY: the workqueue and notifier it makes live until `drop`.
        kernel::error::to_result(unsafe { kerneld_shim_start() })?;
        Ok(Workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // SAFETY: started in `start`; waits for the workers still running.
        unsafe { kerneld_shim_stop() };
        pr_info!("request_module() back to the usermode helper\n");
    }
}

struct KerneldShim {
    // Fields drop in order: the handler is unregistered (which waits for
    // calls in flight) before the workers stop.
    _handler: kmod::Registration<Handler>,
    _workers: Workers,
}

impl kernel::Module for KerneldShim {
    fn init(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: a plain call, no argument.
        SEQUENCE.store(unsafe { kerneld_shim_random() }, Ordering::Relaxed);
        let workers = Workers::start()?;
        // On failure `workers` is dropped: stopped, nothing queued yet.
        let handler = kmod::Registration::new(module)?;
        // A plain value: 7.x's formatting macro takes no `if` as an argument.
        let fallback = if setting(Setting::Fallback) != 0 {
            "Y"
        } else {
            "N"
        };
        pr_info!(
            "serving request_module() through kerneld's queue (key {:#x}, read_wait_ms {}, reply_wait_ms {}, fallback {})\n",
            setting(Setting::Key),
            setting(Setting::ReadWaitMs),
            setting(Setting::ReplyWaitMs),
            fallback
        );
        Ok(KerneldShim {
            _handler: handler,
            _workers: workers,
        })
    }
}
