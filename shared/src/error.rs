//! Error types shared by both services. Each says whether retrying may help
//! (`is_retryable`): a timeout or a dropped connection may pass, a 404 or an
//! undecodable image will not.

use std::path::PathBuf;

/// Why an id, a source name or a storage path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long, the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} {value:?} has the character {ch:?}; allowed are A-Z a-z 0-9 '-' '_' and '.' (not first)")]
    BadChar {
        what: &'static str,
        value: String,
        ch: char,
    },
    #[error("{what} {value:?} may not start with '.'")]
    LeadingDot { what: &'static str, value: String },
    #[error("storage path {0:?} is not of the form <folder>/<name>")]
    BadPath(String),
}

/// Failure to write or read a file under the storage root.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    BadPath(#[from] IdError),
}

impl StoreError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Disk full, a permission fixed by an operator, a file system hiccup: worth
    /// another try. A path that breaks the rules never will be.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io { .. })
    }
}

/// Failure to turn one CSV row into a stored file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("timed out fetching {0}")]
    Timeout(String),
    #[error("HTTP {status} for {url}")]
    Status { status: u16, url: String },
    #[error("{url} is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("reading the body of {url}: {reason}")]
    Body { url: String, reason: String },
    #[error("{url} is not an image (content type {content_type:?}, first bytes {magic})")]
    NotAnImage {
        url: String,
        content_type: String,
        magic: String,
    },
    #[error("storing {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("fetcher unavailable: {0}")]
    Mailbox(String),
}

impl FetchError {
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Timeout(_)
            | FetchError::Body { .. }
            | FetchError::Mailbox(_) => true,
            // 408 Request Timeout, 429 Too Many Requests and 5xx may pass.
            FetchError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            FetchError::Store { source, .. } => source.is_retryable(),
            FetchError::InvalidUrl { .. }
            | FetchError::TooLarge { .. }
            | FetchError::NotAnImage { .. } => false,
        }
    }
}

/// Failure to publish a message (no delivery report, or a negative one).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encoding the message for id {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("delivering id {id} to topic {topic}: {reason}")]
    Delivery {
        id: String,
        topic: String,
        reason: String,
    },
    #[error("producer unavailable: {0}")]
    Mailbox(String),
    #[error("the producer {0}")]
    Panicked(String),
}

/// A database operation failed. Carried as text so that `shared` does not
/// depend on the database driver; `retryable` is false only for errors that
/// the same input would raise again (a constraint the data breaks).
#[derive(Debug, Clone, thiserror::Error)]
#[error("database: {message}")]
pub struct DbError {
    pub message: String,
    pub retryable: bool,
}

/// Failure to merge the parts of one id.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("reading part {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("part {path} cannot be decoded: {reason}")]
    Decode { path: String, reason: String },
    #[error("part {path} is {width}x{height}, over the limit of {limit} pixels")]
    TooLarge {
        path: String,
        width: u32,
        height: u32,
        limit: u64,
    },
    #[error("encoding the merged image: {0}")]
    Encode(String),
    #[error("writing the merged image: {0}")]
    Store(#[from] StoreError),
    #[error("the merge panicked: {0}")]
    Panicked(String),
    #[error("the id has no parts to merge")]
    NoParts,
    #[error("only {stored} of the {wanted} configured sources have a stored part (was a source added to the configuration?)")]
    MissingParts { stored: usize, wanted: usize },
}

impl MergeError {
    /// A missing or unreadable file may appear (another instance still writing,
    /// a volume remounted); bytes that do not decode will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            MergeError::Read { .. } | MergeError::Panicked(_) => true,
            MergeError::Store(e) => e.is_retryable(),
            MergeError::Decode { .. }
            | MergeError::TooLarge { .. }
            | MergeError::Encode(_)
            | MergeError::NoParts
            | MergeError::MissingParts { .. } => false,
        }
    }
}
