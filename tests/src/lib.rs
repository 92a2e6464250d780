pub mod daemon;
pub mod fake;
pub mod flood;
pub mod layout;
pub mod rng;
pub mod shim;
