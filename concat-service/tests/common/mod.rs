//! Test harness: every test gets its own database (created from
//! `DATABASE_URL`), its own topics and consumer group (a random suffix), a
//! temporary storage root and a real HTTP server on 127.0.0.1. `KAFKA_BROKERS`
//! and `DATABASE_URL` must point at running servers: `make test` starts them.

#![allow(dead_code)]

pub mod http;
pub mod images;

use std::path::PathBuf;
use std::time::Duration;

use diesel::prelude::*;
use shared::config::{Settings, SourceSettings};

use self::http::ImageServer;

pub struct TestEnv {
    pub settings: Settings,
    pub server: ImageServer,
    pub dir: tempfile::TempDir,
    admin_url: String,
    db_name: String,
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts Kafka and PostgreSQL and sets it")
    })
}

impl TestEnv {
    pub fn new(sources: &[&str]) -> Self {
        let _ = env_logger::builder()
            .is_test(true)
            .parse_env(env_logger::Env::default().default_filter_or(
                if std::env::var_os("TEST_LOG").is_some() {
                    "info"
                } else {
                    "warn"
                },
            ))
            .try_init();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let admin_url = required_env("DATABASE_URL");
        let db_name = format!("tm_test_{suffix}");
        let mut admin = PgConnection::establish(&admin_url).expect("connecting to DATABASE_URL");
        diesel::sql_query(format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .expect("creating the test database");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.kafka.brokers = required_env("KAFKA_BROKERS");
        settings.database.url = replace_db_name(&admin_url, &db_name);
        settings.storage.root = dir.path().join("storage");
        settings.sources = sources
            .iter()
            .map(|name| SourceSettings {
                name: (*name).to_owned(),
                csv: dir.path().join(format!("{name}.csv")),
                topic: Some(format!("{name}-{suffix}")),
            })
            .collect();
        settings.consumer.group_id = format!("cs-test-{suffix}");
        settings.consumer.shutdown_grace_ms = 5_000;
        settings.merge.sweep_interval_ms = 200;
        settings.merge.retry_backoff_ms = 100;
        settings.merge.workers = 2;
        settings.download.retry_backoff_ms = 50;
        settings.download.request_timeout_ms = 10_000;
        settings.validate().expect("test settings are valid");
        Self {
            settings,
            server: ImageServer::start(),
            dir,
            admin_url,
            db_name,
        }
    }

    /// Writes a source's CSV in the original format: header `id,path,`, a
    /// trailing comma on every line, no final newline.
    pub fn write_csv(&self, source: &str, rows: &[(String, String)]) -> PathBuf {
        let path = self.dir.path().join(format!("{source}.csv"));
        let mut text = String::from("id,path,");
        for (id, url) in rows {
            text.push_str(&format!("\n{id},{url},"));
        }
        std::fs::write(&path, text).expect("writing a CSV");
        path
    }

    pub fn db(&self) -> PgConnection {
        PgConnection::establish(&self.settings.database.url)
            .expect("connecting to the test database")
    }

    /// Ids per state: (pending, ready, merging, merged, failed).
    pub fn counts(&self) -> Vec<(String, i64)> {
        concat_service::db::state_counts(&mut self.db()).expect("counting states")
    }

    pub fn count(&self, state: &str) -> i64 {
        self.counts()
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    }

    /// Polls until `done` holds, or panics with the last counts after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = std::time::Instant::now() + limit;
        while !done(self) {
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}; states: {:?}",
                    self.counts()
                );
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (state, output_path, error) of one id.
    pub fn image_row(&self, id: &str) -> Option<(String, Option<String>, Option<String>)> {
        use concat_service::schema::images::dsl;
        dsl::images
            .find(id)
            .select((dsl::state, dsl::output_path, dsl::error))
            .first(&mut self.db())
            .optional()
            .expect("reading an image row")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .execute(&mut admin);
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A stop signal that never fires (dls runs to the end of its CSVs).
pub fn never_stop() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}
