pub mod daemon;
pub mod fake;
pub mod layout;
