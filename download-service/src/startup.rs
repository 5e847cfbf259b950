//! Wires the dls actors and runs every selected source to the end.

use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use shared::config::Settings;
use shared::storage::Storage;
use tokio::sync::watch;

use crate::actors::csv_reader::{CsvReader, ReadSource};
use crate::actors::fetcher::Fetcher;
use crate::actors::kafka_producer::KafkaProducer;
use crate::summary::{RunSummary, SourceSummary};

/// How long start-up waits for Kafka to answer before giving up.
const KAFKA_PATIENCE: Duration = Duration::from_secs(60);

/// Runs the sources named in `only` (all configured ones when empty) and
/// returns what became of every row. Setting `stop` to true stops taking new
/// rows; rows in flight finish and are counted. Errors only when nothing can
/// run (unknown source, Kafka unreachable, bad producer configuration).
pub async fn run(
    settings: Settings,
    only: &[String],
    stop: watch::Receiver<bool>,
) -> anyhow::Result<RunSummary> {
    for name in only {
        if settings.sources.iter().all(|s| &s.name != name) {
            anyhow::bail!(
                "unknown source {name:?}; configured sources: {}",
                settings.source_names().join(", ")
            );
        }
    }
    let sources: Vec<_> = settings
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .cloned()
        .collect();
    let topics: Vec<String> = sources.iter().map(|s| s.topic().to_owned()).collect();
    shared::kafka::ensure_topics_patiently(&settings.kafka, &topics, KAFKA_PATIENCE).await?;

    let producer = KafkaProducer::new(settings.kafka.clone())
        .context("creating the Kafka producer (check [kafka] in the configuration)")?;
    let producer = Supervisor::start(move |_| producer);
    let storage = Storage::new(&settings.storage.root);
    let fetchers: Vec<Addr<Fetcher>> = (0..settings.download.fetchers)
        .map(|_| {
            let fetcher =
                Fetcher::new(settings.download.clone(), storage.clone(), producer.clone());
            Supervisor::start(move |_| fetcher)
        })
        .collect();
    let reader = Supervisor::start(|_| CsvReader);
    log::info!(
        "dls: {} source(s), {} fetchers, storage root {}",
        sources.len(),
        fetchers.len(),
        storage.root().display()
    );

    let runs = sources.iter().map(|source| {
        let request = ReadSource {
            name: source.name.clone(),
            topic: source.topic().to_owned(),
            csv: source.csv.clone(),
            fetchers: fetchers.clone(),
            in_flight: settings.download.fetchers,
            stop: stop.clone(),
        };
        let reader = reader.clone();
        let name = source.name.clone();
        async move {
            reader
                .send(request)
                .await
                .unwrap_or_else(|e| SourceSummary {
                    error: Some(format!("csv reader failed: {e}")),
                    ..SourceSummary::new(&name)
                })
        }
    });
    let sources = futures_util::future::join_all(runs).await;
    Ok(RunSummary { sources })
}
