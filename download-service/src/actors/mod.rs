//! One actor per module, named after it.

pub mod csv_reader;
pub mod fetcher;
pub mod kafka_producer;
