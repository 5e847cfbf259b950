//! Shared pieces of two-micros: the vocabulary both services speak.
//!
//! - [`config`]: typed settings, loaded once (defaults < TOML file < environment).
//! - [`ids`]: validated newtypes for ids, source names and storage paths, so that
//!   nothing read from a CSV or a Kafka message can escape the storage root.
//! - [`messages`]: the versioned JSON message on the topics and the actor messages.
//! - [`storage`]: atomic writes under the storage root (temp file, fsync, rename).
//! - [`image_kind`]: image formats told by their magic bytes.
//! - [`kafka`]: client configuration and topic creation used by both services.
//! - [`panic`]: panics turned into errors at actor boundaries.
//! - [`error`]: the error types, each able to say whether a retry may help.
//! - [`shutdown`]: SIGINT/SIGTERM as a future.

pub mod config;
pub mod error;
pub mod ids;
pub mod image_kind;
pub mod kafka;
pub mod messages;
pub mod panic;
pub mod shutdown;
pub mod storage;
