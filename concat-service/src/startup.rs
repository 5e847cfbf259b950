//! Wires the cs actors: migrations, topics, then DbActor, Combiner, Consumer.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use diesel::Connection as _;
use shared::config::Settings;
use shared::messages::Drain;
use shared::storage::Storage;

use crate::actors::combiner::Combiner;
use crate::actors::consumer::Consumer;
use crate::actors::db_actor::DbActor;
use crate::db;

/// How long start-up waits for PostgreSQL and Kafka before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running cs: the actors' addresses (tests use them to inject failures).
pub struct Application {
    pub consumer: Addr<Consumer>,
    pub combiner: Addr<Combiner>,
    pub db: Addr<DbActor>,
    grace: Duration,
}

impl Application {
    /// Applies pending migrations, creates missing topics and starts the
    /// actors in the current actix system.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        migrate_patiently(&settings.database.url, PATIENCE).await?;
        let topics: Vec<String> = settings
            .sources
            .iter()
            .map(|s| s.topic().to_owned())
            .collect();
        shared::kafka::ensure_topics_patiently(&settings.kafka, &topics, PATIENCE).await?;

        let pool = db::pool(
            &settings.database.url,
            settings.database.pool_size,
            Duration::from_millis(settings.database.connect_timeout_ms),
        );
        let sources = settings.source_names();
        let db = {
            let sources = sources.clone();
            SyncArbiter::start(settings.database.pool_size as usize, move || {
                DbActor::new(pool.clone(), sources.clone())
            })
        };
        let storage = Storage::new(&settings.storage.root);
        let combiner = {
            let combiner = Combiner::new(
                settings.merge.clone(),
                sources.len(),
                storage,
                Duration::from_millis(settings.storage.stale_temp_ms),
                db.clone(),
            );
            Supervisor::start(move |_| combiner)
        };
        let topic_sources: HashMap<String, String> = settings
            .sources
            .iter()
            .map(|s| (s.topic().to_owned(), s.name.clone()))
            .collect();
        let consumer = {
            let consumer = Consumer::new(
                settings.kafka.clone(),
                settings.consumer.clone(),
                topic_sources,
                db.clone(),
                combiner.clone(),
            );
            Supervisor::start(move |_| consumer)
        };
        log::info!(
            "cs: sources {:?}, {} merge workers, storage root {}",
            sources,
            settings.merge.worker_count(),
            settings.storage.root.display()
        );
        Ok(Self {
            consumer,
            combiner,
            db,
            grace: Duration::from_millis(settings.consumer.shutdown_grace_ms),
        })
    }

    /// Stops taking messages, commits stored offsets, lets merges in flight
    /// finish, all within the grace period. Unfinished claims expire and are
    /// merged again by the next instance.
    pub async fn stop(self) {
        let drain = async {
            if let Err(e) = self.consumer.send(Drain).await {
                log::warn!("consumer did not drain: {e}");
            }
            if let Err(e) = self.combiner.send(Drain).await {
                log::warn!("combiner did not drain: {e}");
            }
        };
        if actix_rt::time::timeout(self.grace, drain).await.is_err() {
            log::warn!(
                "shutdown grace of {:?} ran out; unfinished merges are taken again later",
                self.grace
            );
        }
    }
}

/// Runs cs until SIGINT/SIGTERM, then drains and returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let app = Application::start(settings).await?;
    shared::shutdown::signal().await;
    log::info!("stopping: no new messages are taken, merges in flight finish");
    app.stop().await;
    Ok(())
}

/// Applies the migrations, retrying while PostgreSQL is not reachable yet.
pub async fn migrate_patiently(url: &str, patience: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(250);
    loop {
        let url = url.to_owned();
        let result = actix_rt::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut conn = diesel::PgConnection::establish(&url)
                .context("connecting to PostgreSQL (is it running? `make infra-up` starts one)")?;
            Ok(db::migrate(&mut conn)?)
        })
        .await
        .context("migration task")?;
        match result {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() + pause < deadline => {
                log::warn!("{e:#}; retrying in {pause:?}");
                actix_rt::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
