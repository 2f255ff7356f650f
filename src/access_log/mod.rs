//! The access log: one record per partner call, hash-chained, written by a group-commit writer
//! so that no answer with data leaves before its record is durable, and no call pays for a
//! transaction of its own.

mod chain;
pub mod checkpoint;
pub mod export;
pub mod import;
pub mod journal;
pub mod key;
pub mod latest;
pub mod prune;
pub mod query;
mod record;
pub mod start;
mod verify;
mod writer;

pub use chain::{GENESIS_HASH, LEGACY_CHAIN, chain_hash, chain_records};
pub use checkpoint::PublicKeys;
pub use key::{CheckpointKey, CheckpointKeyError};
pub use query::{Cursor, LogFilter};
pub use record::{AccessRecord, ChainedRecord, Outcome};
pub use verify::{Anchor, BrokenLink, ChainReport, VerifyReport, Walker, verify_chain};
pub use writer::{AccessLog, ChainHead, LogError, LogStatus, encode};
