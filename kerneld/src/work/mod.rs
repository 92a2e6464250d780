//! The work: what a message asks for, decided and done.
//!
//! - `dispatch`: decode a borrowed view, id rules, names, counts, and the
//!   one match over message types
//! - `actions`: loads, unloads and programs on the worker pool (merged),
//!   idle sweeps and delayed releases
//! - `request`: the request path of type 2 (decide, load), one copy
//!   (`request::logline`: its log lines and the policy's)
//! - `answer`, `outcome`: the answer to a request, typed until the reply
//! - `jobs`: requests in progress and their waiters (merging)
//! - `pool`: worker threads and the backend's loaders
//! - `programs`: system, route, blanker, pnp and arp requests

pub mod actions;
pub(crate) mod answer;
pub mod dispatch;
pub(crate) mod jobs;
pub(crate) mod outcome;
pub(crate) mod pool;
pub(crate) mod programs;
pub(crate) mod request;
