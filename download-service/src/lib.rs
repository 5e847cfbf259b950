//! dls, the Download Service: reads each source's CSV, downloads every image,
//! stores it atomically under the storage root and publishes a message per row.
//!
//! ```text
//! CsvReader ─FetchRow─▶ Fetcher pool ─Publish─▶ KafkaProducer ─▶ topic per source
//!                          │ atomic write
//!                          ▼
//!                   <root>/<source>/<id>.<ext>
//! ```
//!
//! [`startup::run`] wires the actors and returns a [`summary::RunSummary`].

pub mod actors;
pub mod startup;
pub mod summary;
