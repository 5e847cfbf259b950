//! One actor per module, named after it.

pub mod combiner;
pub mod consumer;
pub mod db_actor;
