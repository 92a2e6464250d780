//! kerneld: the daemon that serves the kernel's module requests.
//!
//! The binary (`main.rs`, with `lifecycle/`) reads the command line and
//! configuration, claims the queue and starts [`server::Daemon`], the
//! handles of the state owners.  A message crosses the folders in order:
//!
//! - `edge`: the reply edge, the queue in and out (receive, reply, outbox)
//! - `work`: decoding, the one match over message types, the request
//!   path, jobs, the worker pool, programs, the typed answer
//! - `state`: the owners of what the daemon keeps: expiry and the record,
//!   the negative cache, live settings, counters
//! - `operator`: what kerneld tells and takes: control words, status,
//!   why, lint, the log, the journal, audit records
//! - `who`: who asked (requester, the module_request tracepoint)
//! - `policy`: who may load what (rules, conditions, module patterns)
//! - `backend`: the module system: a loader (libkmod) on the host's state
//!   (sysfs, netlink), the index watch; a fake with the `fake` feature
//! - `modload`: every module load on the host, through the BPF LSM
//! - `server`: the daemon's handles; `cli`, `config`, `limits`: the
//!   command line, /etc/kerneld.conf and the range of every value;
//!   `names`, `errno`: module names and readable errors
//! - `testing` (tests only): the harness of the daemon-level tests

pub mod backend;
pub mod cli;
pub mod config;
pub mod edge;
mod errno;
pub mod limits;
pub mod modload;
mod names;
pub mod operator;
pub mod policy;
pub mod server;
pub mod state;
pub mod who;
pub mod work;

#[cfg(test)]
mod testing;

/// Capacity the daemon gives its queue: the 16 KiB default holds only a
/// few hundred requests, too few for a storm of concurrent callers.
pub const QUEUE_BYTES: u64 = 4 * 1024 * 1024;
