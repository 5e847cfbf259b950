//! Messages: the JSON on the Kafka topics ([`PartMessage`]) and the actor
//! messages of both services. Commands are verbs (`FetchRow`, `RecordParts`),
//! facts are past tense or states (`IdReady`).

use actix::Message;
use serde::{Deserialize, Serialize};

use crate::error::{DbError, PublishError};
use crate::ids::{ImageId, StoragePath};

/// Version of [`PartMessage`] written by this build. Readers accept this one;
/// a message with another version is recorded as rejected, not guessed at.
pub const MESSAGE_VERSION: u32 = 1;

/// What `dls` publishes for one CSV row, keyed by id, on its source's topic.
/// A row that could not be stored is published too (`status = "failed"`), so
/// that the concat side records the id as failed instead of waiting forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMessage {
    pub version: u32,
    pub id: String,
    pub source: String,
    /// The URL the part came from.
    pub url: String,
    #[serde(flatten)]
    pub outcome: PartOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PartOutcome {
    Stored(StoredFile),
    Failed { error: String },
}

/// A file written under the storage root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Relative to the storage root: `<source>/<id>.<ext>`.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub content_type: String,
}

impl PartMessage {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses and checks a payload: version, id and path rules.
    pub fn from_json(payload: &[u8]) -> Result<Self, String> {
        let msg: PartMessage =
            serde_json::from_slice(payload).map_err(|e| format!("not a part message: {e}"))?;
        if msg.version != MESSAGE_VERSION {
            return Err(format!(
                "message version {} is not supported (this build reads {MESSAGE_VERSION})",
                msg.version
            ));
        }
        ImageId::parse(&msg.id).map_err(|e| e.to_string())?;
        // PostgreSQL text cannot hold NUL: such a message could never be stored.
        let texts = match &msg.outcome {
            PartOutcome::Stored(f) => {
                vec![&msg.source, &msg.url, &f.path, &f.sha256, &f.content_type]
            }
            PartOutcome::Failed { error } => vec![&msg.source, &msg.url, error],
        };
        if texts.iter().any(|t| t.contains('\0')) {
            return Err("the message has a NUL character in a text field".into());
        }
        if let PartOutcome::Stored(file) = &msg.outcome {
            let path = StoragePath::parse(&file.path).map_err(|e| e.to_string())?;
            // A part names its own file: <source>/<id>.<ext>, nothing else.
            let own = format!("{}/{}.", msg.source, msg.id);
            if !path.as_str().starts_with(&own) {
                return Err(format!("path {path} is not this part's file ({own}<ext>)"));
            }
        }
        Ok(msg)
    }
}

// ---- dls -------------------------------------------------------------------

/// One CSV row for a Fetcher: download `url`, store it as `<source>/<id>.<ext>`,
/// publish the outcome on `topic` and report. `Err` means the Fetcher itself
/// failed (it restarts): the row is handed to another one.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<RowReport, String>")]
pub struct FetchRow {
    pub source: String,
    pub topic: String,
    pub id: ImageId,
    pub url: String,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    pub fetch: FetchOutcome,
    /// The delivery report of the message that says so, or why there is none.
    pub published: Result<Delivered, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    Downloaded,
    /// Already in storage from an earlier run: not downloaded again.
    AlreadyStored,
    Failed(String),
}

/// Publish one message and wait for its delivery report.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Delivered, PublishError>")]
pub struct Publish {
    pub topic: String,
    pub message: PartMessage,
}

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

// ---- cs --------------------------------------------------------------------

/// A part message as read from Kafka, with where it came from.
#[derive(Debug, Clone)]
pub struct ReceivedPart {
    pub message: PartMessage,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A payload that could not be understood; kept so a user can see it.
#[derive(Debug, Clone)]
pub struct RejectedMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub error: String,
    /// The start of the payload, lossily decoded.
    pub payload_excerpt: String,
}

/// One item of a consumed batch, in offset order.
#[derive(Debug, Clone)]
pub enum Consumed {
    Part(ReceivedPart),
    Rejected(RejectedMessage),
}

/// Persist a batch in one transaction. The reply lists the ids that became
/// ready to merge; it comes only after the commit.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<String>, DbError>")]
pub struct RecordParts(pub Vec<Consumed>);

/// An id's parts are all stored: the Combiner may claim it now.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct IdReady(pub String);

/// Claim up to `max` ready ids (or ids whose lease ran out) for `lease_ms`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Claim>, DbError>")]
pub struct ClaimReady {
    pub max: i64,
    pub lease_ms: u64,
    pub claimer: String,
}

/// A claimed id: the parts to merge, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    /// Which try this is (1 for the first since the last new part).
    pub attempt: i32,
    /// Identifies this claim: finishing checks it, so a claim that expired and
    /// was taken again elsewhere cannot be finished twice.
    pub token: i64,
    pub parts: Vec<String>,
}

/// Record the end of a merge attempt.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), DbError>")]
pub enum FinishMerge {
    Merged {
        id: String,
        token: i64,
        output: String,
    },
    /// Retry after `retry_in_ms`, or record `failed` when `retry_in_ms` is None.
    Failed {
        id: String,
        token: i64,
        error: String,
        retry_in_ms: Option<u64>,
    },
}

/// A merge task has recorded its result: the Combiner may claim more.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct MergeFinished;

/// Stop taking new work, finish or release what is in flight, commit, then
/// reply (SIGTERM/SIGINT).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Fault injection, for the supervision tests and for chaos drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum SimulateFailure {
    /// Fail as if an error was met: the actor stops and its supervisor
    /// restarts it with fresh state.
    Stop,
    /// Panic inside the actor's next piece of real work (a batch, a query, a
    /// merge), where the panic guard must turn it into an error.
    Panic,
}

impl SimulateFailure {
    /// What every actor does with it: `Stop` stops the actor now (its
    /// supervisor or arbiter restarts it); `Panic` arms `panic_next`, which the
    /// actor checks inside its guarded work.
    pub fn apply<C: actix::ActorContext>(self, actor: &str, panic_next: &mut bool, ctx: &mut C) {
        match self {
            SimulateFailure::Stop => {
                log::warn!("{actor}: failure requested, stopping for a restart");
                ctx.stop();
            }
            SimulateFailure::Panic => *panic_next = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> PartMessage {
        PartMessage {
            version: MESSAGE_VERSION,
            id: "42".into(),
            source: "super_heros".into(),
            url: "http://127.0.0.1:8000/42.jpg".into(),
            outcome: PartOutcome::Stored(StoredFile {
                path: "super_heros/42.jpg".into(),
                size: 1234,
                sha256: "ab".repeat(32),
                content_type: "image/jpeg".into(),
            }),
        }
    }

    #[test]
    fn the_wire_format_is_flat_json() {
        let json: serde_json::Value = serde_json::from_slice(&stored().to_json().unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["status"], "stored");
        assert_eq!(json["path"], "super_heros/42.jpg");
        assert_eq!(json["size"], 1234);
        let failed = PartMessage {
            outcome: PartOutcome::Failed {
                error: "HTTP 404".into(),
            },
            ..stored()
        };
        let json: serde_json::Value = serde_json::from_slice(&failed.to_json().unwrap()).unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"], "HTTP 404");
        assert_eq!(
            PartMessage::from_json(&failed.to_json().unwrap()).unwrap(),
            failed
        );
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        assert!(PartMessage::from_json(b"hello")
            .unwrap_err()
            .starts_with("not a part message"));
        let mut v2 = stored();
        v2.version = 2;
        assert!(PartMessage::from_json(&v2.to_json().unwrap())
            .unwrap_err()
            .contains("version 2 is not supported"));
        let with_path = |path: &str| PartMessage {
            outcome: PartOutcome::Stored(StoredFile {
                path: path.into(),
                size: 1,
                sha256: String::new(),
                content_type: String::new(),
            }),
            ..stored()
        };
        for path in [
            "../../etc/passwd",
            "alter_egos/42.jpg",
            "super_heros/7.jpg",
            "concat/42.jpg",
        ] {
            let err = PartMessage::from_json(&with_path(path).to_json().unwrap()).unwrap_err();
            assert!(
                err.contains(path) || err.contains("storage path"),
                "{path}: {err}"
            );
        }
        let mut nul = stored();
        nul.url = "http://h/\0".into();
        assert_eq!(
            PartMessage::from_json(&nul.to_json().unwrap()).unwrap_err(),
            "the message has a NUL character in a text field"
        );
    }
}
