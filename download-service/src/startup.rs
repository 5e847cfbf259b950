//! Wires the dls actors and runs every selected source to the end.

use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use shared::config::{Settings, SourceSettings};
use shared::storage::Storage;
use tokio::sync::watch;

use crate::actors::csv_reader::{CsvReader, ReadSource};
use crate::actors::fetcher::Fetcher;
use crate::actors::kafka_producer::KafkaProducer;
use crate::summary::{RunSummary, SourceSummary};

/// How long start-up waits for Kafka to answer before giving up.
const KAFKA_PATIENCE: Duration = Duration::from_secs(60);

/// A started dls: its actors, ready to run the selected sources. Tests use
/// the addresses to inject failures.
pub struct Downloader {
    pub producer: Addr<KafkaProducer>,
    pub fetchers: Vec<Addr<Fetcher>>,
    pub reader: Addr<CsvReader>,
    sources: Vec<SourceSettings>,
    in_flight: usize,
}

impl Downloader {
    /// Checks the source names, creates missing topics (waiting for Kafka up
    /// to a minute), cleans stale temporary files and starts the actors.
    /// Errors only when nothing can run (unknown source, Kafka unreachable,
    /// bad producer configuration).
    pub async fn start(settings: &Settings, only: &[String]) -> anyhow::Result<Self> {
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
        remove_stale_temp_files(&storage, &sources, settings.storage.stale_temp_ms).await;
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
        Ok(Self {
            producer,
            fetchers,
            reader,
            sources,
            in_flight: settings.download.fetchers,
        })
    }

    /// Runs every selected source to the end and returns what became of each
    /// row. Setting `stop` to true stops taking new rows; rows in flight
    /// finish and are counted.
    pub async fn run(&self, stop: watch::Receiver<bool>) -> RunSummary {
        let runs = self.sources.iter().map(|source| {
            let request = ReadSource {
                name: source.name.clone(),
                topic: source.topic().to_owned(),
                csv: source.csv.clone(),
                fetchers: self.fetchers.clone(),
                in_flight: self.in_flight,
                stop: stop.clone(),
            };
            let reader = self.reader.clone();
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
        RunSummary {
            sources: futures_util::future::join_all(runs).await,
        }
    }
}

/// Starts dls and runs the sources named in `only` (all configured ones when
/// empty) to the end; see [`Downloader`].
pub async fn run(
    settings: Settings,
    only: &[String],
    stop: watch::Receiver<bool>,
) -> anyhow::Result<RunSummary> {
    let downloader = Downloader::start(&settings, only).await?;
    Ok(downloader.run(stop).await)
}

/// Deletes what a crash left half-written in the sources' folders.
async fn remove_stale_temp_files(storage: &Storage, sources: &[SourceSettings], stale_ms: u64) {
    let storage = storage.clone();
    let folders: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let stale = Duration::from_millis(stale_ms);
    let cleaned = actix_rt::task::spawn_blocking(move || {
        for folder in folders {
            match storage.remove_stale_temp_files(&folder, stale) {
                Ok(0) => {}
                Ok(n) => log::info!("removed {n} stale temporary file(s) in {folder}/"),
                Err(e) => log::warn!("cleaning temporary files in {folder}/: {e}"),
            }
        }
    })
    .await;
    if let Err(e) = cleaned {
        log::warn!("cleaning temporary files: {e}");
    }
}
