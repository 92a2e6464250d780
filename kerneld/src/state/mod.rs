//! The state owners: each piece of state the daemon keeps, behind one
//! owner.
//!
//! - `expiry`, `record`: what kerneld loaded, idle sweeps and delayed
//!   releases (one lock), and the record's file
//! - `negcache`: failures remembered, and the rate limit
//! - `settings`: the live settings
//! - `metrics`: counters by type and the recent requests

pub(crate) mod expiry;
pub(crate) mod metrics;
pub(crate) mod negcache;
pub mod record;
pub(crate) mod settings;
