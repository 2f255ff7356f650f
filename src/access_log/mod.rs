//! The access log: one record per partner call, hash-chained, written by a group-commit writer
//! so that no answer with data leaves before its record is durable, and no call pays for a
//! transaction of its own.

mod chain;
mod record;
mod verify;
mod writer;

pub use chain::{GENESIS_HASH, chain_hash};
pub use record::{AccessRecord, ChainedRecord, Outcome};
pub use verify::{BrokenLink, VerifyReport, verify_chain};
pub use writer::{AccessLog, LogError};
