//! Test harness: every test gets its own database (created from
//! `DATABASE_URL`), its own topics and consumer group (a random suffix), a
//! temporary storage root and a real HTTP server on 127.0.0.1. `KAFKA_BROKERS`
//! and `DATABASE_URL` must point at running servers: `make test` starts them.

#![allow(dead_code)]

pub mod http;
pub mod images;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use diesel::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use shared::config::{Settings, SourceSettings};

use self::http::ImageServer;
use self::images::{check_part, Sample};

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

pub const SOURCES: [&str; 2] = ["super_heros", "alter_egos"];
/// JPEG at Q95 then Q90 keeps flat quadrants within this of their colour.
pub const TOLERANCE: u8 = 24;

/// An id whose two parts should merge into `size`, with its output extension.
pub struct Pair {
    pub id: String,
    pub left: Sample,
    pub right: Sample,
    pub size: (u32, u32),
    pub ext: &'static str,
}

pub fn pair(id: &str, left: Sample, right: Sample, size: (u32, u32), ext: &'static str) -> Pair {
    Pair {
        id: id.to_owned(),
        left,
        right,
        size,
        ext,
    }
}

/// Serves both parts of each pair and writes the two CSVs.
pub fn publish_pairs(env: &TestEnv, pairs: &[Pair], extra: &[(&str, (String, String))]) {
    let mut rows: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for p in pairs {
        for (source, sample) in [(SOURCES[0], &p.left), (SOURCES[1], &p.right)] {
            let url = env.server.serve(
                &format!("/{source}/{}.{}", p.id, sample.extension()),
                200,
                sample.content_type(),
                sample.encode(),
            );
            rows.entry(source).or_default().push((p.id.clone(), url));
        }
    }
    for (source, row) in extra {
        rows.entry(source).or_default().push(row.clone());
    }
    for source in SOURCES {
        env.write_csv(source, rows.get(source).map_or(&[][..], |r| &r[..]));
    }
}

/// Checks the merged file of every pair: size, format, and both parts' colours.
pub fn check_outputs(env: &TestEnv, pairs: &[Pair]) {
    for p in pairs {
        let (state, output, error) = env.image_row(&p.id).expect("a row per id");
        assert_eq!(state, "merged", "id {}: {error:?}", p.id);
        let output = output.expect("merged ids record their output");
        assert_eq!(output, format!("concat/{}.{}", p.id, p.ext));
        let merged = image::open(env.settings.storage.root.join(&output))
            .unwrap_or_else(|e| panic!("id {}: opening {output}: {e}", p.id))
            .into_rgb8();
        assert_eq!(merged.dimensions(), p.size, "id {} size", p.id);
        let h = p.size.1;
        let left_w = (u64::from(p.left.width) * u64::from(h) + u64::from(p.left.height) / 2)
            / u64::from(p.left.height);
        let left_w = left_w as u32;
        check_part(&merged, 0, left_w, &p.left, TOLERANCE)
            .unwrap_or_else(|e| panic!("id {} left part: {e}", p.id));
        check_part(&merged, left_w, p.size.0 - left_w, &p.right, TOLERANCE)
            .unwrap_or_else(|e| panic!("id {} right part: {e}", p.id));
    }
}

/// Every partition's committed offset is its high watermark: every message
/// was persisted and its offset (message offset + 1) committed; none lost,
/// none left to re-read.
pub fn assert_all_committed(env: &TestEnv) {
    let lagging = uncommitted(env);
    assert!(
        lagging.is_empty(),
        "not committed up to the high watermark: {lagging:?}"
    );
}

/// Partitions whose committed offset is below the high watermark, as
/// `(topic/partition, committed, high watermark)`.
pub fn uncommitted(env: &TestEnv) -> Vec<(String, i64, i64)> {
    let consumer: BaseConsumer = shared::kafka::client_config(&env.settings.kafka)
        .set("group.id", &env.settings.consumer.group_id)
        .create()
        .expect("a consumer to read committed offsets");
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for source in &env.settings.sources {
        for p in 0..env.settings.kafka.partitions {
            tpl.add_partition(source.topic(), p);
            let (_, hi) = consumer
                .fetch_watermarks(source.topic(), p, Duration::from_secs(10))
                .expect("watermarks");
            high.insert((source.topic().to_owned(), p), hi);
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            let hi = high[&(e.topic().to_owned(), e.partition())];
            let got = match e.offset() {
                Offset::Offset(n) => n,
                _ => 0,
            };
            (got != hi).then(|| (format!("{}/{}", e.topic(), e.partition()), got, hi))
        })
        .collect()
}
