//! The operator's surface: what kerneld tells, and the words it takes.
//!
//! - `control`: control words (type 255) and the reload on SIGHUP
//! - `status`: status text and JSON from a plain snapshot; `textfile`:
//!   the same in the Prometheus format, written for node_exporter
//! - `why`: why a module is loaded (`kdstat why`), from the record
//! - `lint`: `--check-config` and `--print-config`, offline
//! - `log`, `journal`: the journal (native protocol, structured fields)
//!   or syslog (`log_debug!` formats only when debug is on)
//! - `audit`: denials in the audit log

pub mod audit;
pub mod control;
pub(crate) mod journal;
pub mod lint;
pub mod log;
pub mod status;
pub(crate) mod textfile;
pub mod why;
