//! cs, the Concat Service: persists every part message in PostgreSQL and
//! merges each id side by side once every source has delivered its part.
//!
//! ```text
//! topics ─▶ Consumer ─RecordParts─▶ DbActor (diesel, SyncArbiter) ─▶ PostgreSQL
//!              │  offsets stored after the commit          ▲
//!              └──── IdReady ────▶ Combiner ─ClaimReady────┘
//!                                     │ merge on the blocking pool
//!                                     ▼
//!                              <root>/concat/<id>.<ext>
//! ```
//!
//! [`startup::Application`] starts the actors; tests boot the same one.

pub mod actors;
pub mod db;
pub mod merge;
pub mod schema;
pub mod startup;
