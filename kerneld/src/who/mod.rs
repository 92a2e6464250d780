//! Who asked: the requester of a module request, read from the
//! module_request tracepoint (`trace`) or sent by the in-kernel sender.

pub mod requester;
pub mod trace;
