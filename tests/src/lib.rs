pub mod daemon;
pub mod fake;
