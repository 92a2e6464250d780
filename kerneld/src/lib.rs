//! kerneld: the daemon that serves the kernel's module requests.
//!
//! The binary (`main.rs`) reads the command line and configuration,
//! creates the queue and starts [`server::Daemon`].  Each module has one
//! job:
//!
//! - `cli`, `config`: command line and /etc/kerneld.conf
//! - `server`: the daemon's handles on the owners of state; start, stop,
//!   drain, status snapshot
//! - `receiver`: the receive loop (one reused buffer), queue re-creation,
//!   answers to malformed messages, flush
//! - `dispatch`: decode a borrowed view, id rules, names, counts, and the
//!   one match over message types
//! - `actions`: loads, unloads and programs on the worker pool (merged),
//!   idle sweeps and delayed releases
//! - `control`: control words (type 255) and the reload on SIGHUP
//! - `reply`, `outbox`: replies sent, unread ones removed, and those that
//!   wait for room (one thread of their own)
//! - `request`: the request path of type 2 (decide, load), one copy
//!   (`request::logline`: its log lines and the policy's)
//! - `jobs`: requests in progress and their waiters (merging)
//! - `pool`: worker threads and libkmod contexts
//! - `backend`: the module system behind a trait: libkmod (resolve, load,
//!   unload; module files' provenance in `modinfo`), sysfs, netlink; a
//!   fake with the `fake` feature
//! - `expiry`, `record`: what kerneld loaded, idle sweeps and delayed
//!   releases (one lock), and the record's file (read bounded and written
//!   without following links by `kmod_ipc::files`)
//! - `policy`, `pattern`, `negcache`, `names`: who may load what (shell
//!   globs compiled once; `policy::condition`: the conditions after `if`,
//!   of requester and module provenance, parsed and judged); failures
//!   remembered; validation of names
//! - `why`: why a module is loaded (`kdstat why`), from the record
//! - `modload`: every module load on the host, seen and decided in the
//!   kernel through the BPF LSM (`module-loads`; the program is loaded
//!   with the `bpf-lsm` feature); verdicts by content, events for the log,
//!   the audit log and `why`
//! - `trace`, `requester`: who asked (the module_request tracepoint)
//! - `programs`: system, route, blanker, pnp and arp requests
//! - `status`: status text and JSON from a plain snapshot; `textfile`:
//!   the same in the Prometheus format, written for node_exporter
//! - `metrics`, `settings`, `outcome`: counters by type and the recent
//!   requests; the live settings; the answer to a request
//! - `limits`: the range of every duration and count
//! - `lint`: `--check-config` and `--print-config`, offline
//! - `log`, `journal`, `errno`: the journal (native protocol, structured
//!   fields) or syslog, and readable errors (`log_debug!` formats only
//!   when debug is on)
//! - `testing` (tests only): the harness of the daemon-level tests and the
//!   counting allocator

pub mod actions;
mod answer;
pub mod audit;
pub mod backend;
pub mod cli;
pub mod config;
pub mod control;
pub mod dispatch;
mod errno;
mod expiry;
mod jobs;
mod journal;
pub mod limits;
pub mod lint;
pub mod log;
mod metrics;
pub mod modload;
mod names;
mod negcache;
mod outbox;
mod outcome;
mod pattern;
pub mod policy;
mod pool;
mod programs;
pub mod receiver;
pub mod record;
mod reply;
mod request;
pub mod requester;
pub mod server;
mod settings;
pub mod status;
mod textfile;
pub mod trace;
pub mod waiter;
pub mod watch;
pub mod why;

#[cfg(test)]
mod testing;

/// Capacity the daemon gives its queue: the 16 KiB default holds only a
/// few hundred requests, too few for a storm of concurrent callers.
pub const QUEUE_BYTES: u64 = 4 * 1024 * 1024;
