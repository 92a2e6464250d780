//! The reply edge: the queue in and out.
//!
//! - `receiver`: the receive loop (one reused buffer), queue re-creation,
//!   answers to malformed messages, flush
//! - `reply`, `outbox`: replies sent, unread ones removed, and those that
//!   wait for room (one thread of their own)
//! - `waiter`: who waits on a reply id, and whether it still runs

pub(crate) mod outbox;
pub mod receiver;
pub(crate) mod reply;
pub mod waiter;
