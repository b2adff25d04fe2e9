//! The subcommands' implementations; `main.rs` holds only their clap
//! definitions and the dispatch. No cache logic lives here: commands call
//! the store or talk to a live mount through its files.

pub mod mount;
pub mod mount_helper;
pub mod notify;
