//! Typed settings, loaded once at start-up.
//!
//! Layers, each overriding the one before: built-in defaults, the TOML file
//! (`--config`, else `TWO_MICROS_CONFIG`, else `two-micros.toml` in the working
//! directory when present), then the environment: `KAFKA_BROKERS`,
//! `DATABASE_URL`, `STORAGE_ROOT`, and any setting as
//! `TWO_MICROS__<SECTION>__<KEY>` (for example `TWO_MICROS__DOWNLOAD__FETCHERS=16`,
//! or `TWO_MICROS__SOURCES='[{name="a", csv="a.csv"}]'`). Values are read as TOML
//! when they parse as TOML, else as plain strings. Clap flags of the binaries
//! come last. `two-micros.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::{SourceName, CONCAT_FOLDER};

/// Prefix of the nested environment overrides.
pub const ENV_PREFIX: &str = "TWO_MICROS__";
/// The default config file, read when present in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "two-micros.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub storage: StorageSettings,
    /// In order: the first source is the left part of a merged image.
    pub sources: Vec<SourceSettings>,
    pub download: DownloadSettings,
    pub consumer: ConsumerSettings,
    pub merge: MergeSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Partitions of topics created at start-up. Every source topic of one
    /// pipeline must have the same count (parts of an id meet by key).
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long the producer keeps trying to deliver one message.
    pub message_timeout_ms: u64,
    /// Extra librdkafka properties for every client (e.g. `"socket.timeout.ms"`).
    pub client_overrides: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    /// Connections in the pool; the DbActor runs one thread per connection.
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Downloads go to `<root>/<source>/<id>.<ext>`, merges to `<root>/concat/`.
    pub root: PathBuf,
    /// Temporary files older than this are leftovers of a crash and are
    /// deleted (by dls at start, by cs at start and periodically). Must exceed
    /// the time one file takes to write.
    pub stale_temp_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub name: String,
    /// The CSV file (`id,path` header, `path` an image URL).
    pub csv: PathBuf,
    /// Defaults to the source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl SourceSettings {
    pub fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadSettings {
    /// Fetcher actors, i.e. downloads in flight at once.
    pub fetchers: usize,
    pub connect_timeout_ms: u64,
    /// Whole request, headers and body.
    pub request_timeout_ms: u64,
    pub max_image_bytes: usize,
    /// Tries per row for errors that may pass (timeouts, 5xx, resets).
    pub attempts: u32,
    pub retry_backoff_ms: u64,
    /// Skip the download when `<source>/<id>.*` is already stored (resume).
    pub skip_existing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    pub group_id: String,
    /// Messages persisted in one database transaction at most.
    pub batch_size: usize,
    pub session_timeout_ms: u64,
    /// Time allowed to finish in-flight work after SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// JPEG when every part is a JPEG, PNG otherwise.
    Auto,
    Jpeg,
    Png,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MergeSettings {
    /// Merges running at once; 0 means one per core.
    pub workers: usize,
    pub output_format: OutputFormat,
    pub jpeg_quality: u8,
    /// Largest part accepted, in pixels (width × height), to bound memory.
    pub max_part_pixels: u64,
    /// A claim not finished within its lease is taken again by any instance.
    pub lease_ms: u64,
    /// Tries before an id is recorded `failed`.
    pub max_attempts: i32,
    /// First retry delay; doubles with each try.
    pub retry_backoff_ms: u64,
    /// Period of the sweep for ready ids (the happy path does not wait for it).
    pub sweep_interval_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kafka: KafkaSettings::default(),
            database: DatabaseSettings::default(),
            storage: StorageSettings::default(),
            sources: ["super_heros", "alter_egos"]
                .into_iter()
                .map(|name| SourceSettings {
                    name: name.to_owned(),
                    csv: PathBuf::from(format!("input/{name}.csv")),
                    topic: None,
                })
                .collect(),
            download: DownloadSettings::default(),
            consumer: ConsumerSettings::default(),
            merge: MergeSettings::default(),
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:39092".to_owned(),
            partitions: 3,
            replication_factor: 1,
            message_timeout_ms: 120_000,
            client_overrides: BTreeMap::new(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://two_micros:two_micros@127.0.0.1:55432/two_micros".to_owned(),
            pool_size: 4,
            connect_timeout_ms: 5_000,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            root: PathBuf::from("data"),
            stale_temp_ms: 60_000,
        }
    }
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self {
            fetchers: 8,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_image_bytes: 50 * 1024 * 1024,
            attempts: 3,
            retry_backoff_ms: 500,
            skip_existing: true,
        }
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: "two-micros-cs".to_owned(),
            batch_size: 256,
            session_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl Default for MergeSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            output_format: OutputFormat::Auto,
            jpeg_quality: 90,
            max_part_pixels: 64 * 1024 * 1024,
            lease_ms: 60_000,
            max_attempts: 5,
            retry_backoff_ms: 1_000,
            sweep_interval_ms: 2_000,
        }
    }
}

impl MergeSettings {
    /// `workers`, with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

impl Settings {
    /// Loads the layers in order (see the module doc). `file` is the `--config`
    /// flag; without it `TWO_MICROS_CONFIG`, then `./two-micros.toml` if present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = file.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(k, _)| k == "TWO_MICROS_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
                .or_else(|| {
                    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                    default.exists().then_some(default)
                })
        });
        let text = match &file {
            Some(path) => Some((
                path.clone(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?,
            )),
            None => None,
        };
        Self::from_layers(text.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), &env)
    }

    /// The pure part of [`Settings::load`]: a file's text and an environment.
    pub fn from_layers(
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Settings::default())
            .map_err(|e| ConfigError::Invalid(format!("defaults do not serialize: {e}")))?;
        if let Some((path, text)) = file {
            let parsed: toml::Value =
                toml::from_str(text).map_err(|source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?;
            merge(&mut value, parsed);
        }
        // Fixed order whatever the environment's: the short names first, then
        // TWO_MICROS__* sorted, so the specific spelling wins over the alias.
        let mut env: Vec<&(String, String)> = env.iter().collect();
        env.sort_by_key(|(k, _)| (k.starts_with(ENV_PREFIX), k.clone()));
        for (var, raw) in env {
            let keys: Vec<String> = match var.as_str() {
                "KAFKA_BROKERS" => vec!["kafka".into(), "brokers".into()],
                "DATABASE_URL" => vec!["database".into(), "url".into()],
                "STORAGE_ROOT" => vec!["storage".into(), "root".into()],
                _ => match var.strip_prefix(ENV_PREFIX) {
                    Some(rest) => rest.split("__").map(str::to_ascii_lowercase).collect(),
                    None => continue,
                },
            };
            set_path(&mut value, &keys, raw).map_err(|reason| ConfigError::Env {
                var: var.clone(),
                reason,
            })?;
        }
        // Through TOML text, so that a type error quotes the offending line.
        let merged = toml::to_string(&value)
            .map_err(|e| ConfigError::Invalid(format!("merging the layers: {e}")))?;
        let settings: Settings = toml::from_str(&merged).map_err(|e: toml::de::Error| {
            ConfigError::Invalid(format!(
                "(defaults, file and environment merged) {}",
                e.to_string().trim()
            ))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.sources.is_empty() {
            return invalid("at least one source is needed".into());
        }
        let mut names = std::collections::BTreeSet::new();
        let mut topics = std::collections::BTreeSet::new();
        for source in &self.sources {
            if let Err(e) = SourceName::parse(&source.name) {
                return invalid(format!("source: {e}"));
            }
            if source.name == CONCAT_FOLDER {
                return invalid(format!(
                    "a source may not be called {CONCAT_FOLDER:?}: that folder holds merged images"
                ));
            }
            if !names.insert(source.name.as_str()) {
                return invalid(format!("source {:?} is configured twice", source.name));
            }
            if source.topic().is_empty() || !topics.insert(source.topic()) {
                return invalid(format!(
                    "source {:?}: its topic {:?} is empty or used by another source",
                    source.name,
                    source.topic()
                ));
            }
        }
        if self.kafka.brokers.trim().is_empty() || self.database.url.trim().is_empty() {
            return invalid(
                "kafka.brokers (KAFKA_BROKERS) and database.url (DATABASE_URL) may not be empty"
                    .into(),
            );
        }
        if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
            return invalid(
                "kafka.partitions and kafka.replication_factor must be at least 1".into(),
            );
        }
        if self.download.fetchers == 0 || self.download.attempts == 0 {
            return invalid("download.fetchers and download.attempts must be at least 1".into());
        }
        if self.database.pool_size == 0 || self.consumer.batch_size == 0 {
            return invalid("database.pool_size and consumer.batch_size must be at least 1".into());
        }
        if !(1..=100).contains(&self.merge.jpeg_quality) {
            return invalid(format!(
                "merge.jpeg_quality is {}, it must be 1 to 100",
                self.merge.jpeg_quality
            ));
        }
        if self.merge.max_attempts < 1 || self.merge.lease_ms == 0 {
            return invalid("merge.max_attempts and merge.lease_ms must be at least 1".into());
        }
        Ok(())
    }

    /// Source names in merge order.
    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name.clone()).collect()
    }

    /// The source a topic belongs to.
    pub fn source_of_topic(&self, topic: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|s| s.topic() == topic)
    }
}

/// A non-string setting from the environment, read as a TOML value (`8`,
/// `true`, `[..]`, `{..}`); a bare word that is no TOML is taken as a string,
/// but a value that starts like an array or table must parse.
fn env_value(raw: &str) -> Result<toml::Value, String> {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => Ok(t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()))),
        Err(e) if raw.trim_start().starts_with(['[', '{']) => {
            Err(format!("not a valid TOML value: {}", e.message()))
        }
        Err(_) => Ok(toml::Value::String(raw.to_owned())),
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn set_path(value: &mut toml::Value, keys: &[String], raw: &str) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Err("no setting named".into());
    };
    let mut cur = value;
    for key in parents {
        cur = cur
            .as_table_mut()
            .and_then(|t| t.get_mut(key))
            .ok_or_else(|| format!("there is no section {key:?}"))?;
    }
    let table = cur
        .as_table_mut()
        .ok_or_else(|| format!("{:?} is not a section", parents.join(".")))?;
    // A string setting takes the text as it is (a group id "1e3" or a broker
    // list stays what was typed); other settings read it as a TOML value.
    let new = match table.get(last) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
        _ => env_value(raw)?,
    };
    table.insert(last.clone(), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_original_two_sources() {
        let s = Settings::from_layers(None, &[]).unwrap();
        assert_eq!(s.source_names(), ["super_heros", "alter_egos"]);
        assert_eq!(s.sources[1].topic(), "alter_egos");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn the_specific_variable_wins_over_the_alias() {
        let s = Settings::from_layers(
            None,
            &env(&[
                ("TWO_MICROS__KAFKA__BROKERS", "specific:1"),
                ("KAFKA_BROKERS", "alias:2"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "specific:1");
    }

    #[test]
    fn file_then_env_override_in_order() {
        let file = r#"
            [kafka]
            brokers = "file:1"
            [download]
            fetchers = 3
            [[sources]]
            name = "left"
            csv = "l.csv"
            [[sources]]
            name = "right"
            csv = "r.csv"
            topic = "right-topic"
        "#;
        let s = Settings::from_layers(
            Some((Path::new("x.toml"), file)),
            &env(&[
                ("KAFKA_BROKERS", "env:2"),
                ("TWO_MICROS__DOWNLOAD__ATTEMPTS", "7"),
                ("TWO_MICROS__CONSUMER__GROUP_ID", "1e3"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "env:2");
        assert_eq!(s.download.fetchers, 3);
        assert_eq!(s.download.attempts, 7);
        assert_eq!(
            s.consumer.group_id, "1e3",
            "string settings keep the text as typed"
        );
        assert_eq!(s.source_names(), ["left", "right"]);
        assert_eq!(s.sources[1].topic(), "right-topic");
        assert_eq!(s.storage.root, PathBuf::from("data"), "untouched default");
    }

    #[test]
    fn sources_can_come_from_the_environment() {
        let s = Settings::from_layers(
            None,
            &env(&[(
                "TWO_MICROS__SOURCES",
                r#"[{name="a", csv="a.csv"}, {name="b", csv="b.csv"}, {name="c", csv="c.csv"}]"#,
            )]),
        )
        .unwrap();
        assert_eq!(s.source_names(), ["a", "b", "c"]);
    }

    #[test]
    fn mistakes_get_specific_errors() {
        let typo =
            Settings::from_layers(Some((Path::new("x.toml"), "[download]\nfetcher = 2")), &[]);
        assert!(typo
            .unwrap_err()
            .to_string()
            .contains("unknown field `fetcher`"));
        let unknown = Settings::from_layers(None, &env(&[("TWO_MICROS__NOPE__X", "1")]));
        assert_eq!(
            unknown.unwrap_err().to_string(),
            "environment variable TWO_MICROS__NOPE__X: there is no section \"nope\""
        );
        let bad_source = Settings::from_layers(
            None,
            &env(&[("TWO_MICROS__SOURCES", r#"[{name="../x", csv="a.csv"}]"#)]),
        );
        assert!(bad_source
            .unwrap_err()
            .to_string()
            .contains("the character '/'"));
        let dup = Settings::from_layers(
            None,
            &env(&[(
                "TWO_MICROS__SOURCES",
                r#"[{name="a", csv="a.csv"}, {name="a", csv="b.csv"}]"#,
            )]),
        );
        assert!(dup.unwrap_err().to_string().contains("configured twice"));
        let wrong_type = Settings::from_layers(
            Some((Path::new("x.toml"), "[download]\nfetchers = \"8\"")),
            &[],
        );
        let msg = wrong_type.unwrap_err().to_string();
        assert!(
            msg.contains("fetchers = \"8\"") && msg.contains("expected usize"),
            "{msg}"
        );
        let broken_list =
            Settings::from_layers(None, &env(&[("TWO_MICROS__SOURCES", "[{name=\"a\"")]));
        assert!(broken_list
            .unwrap_err()
            .to_string()
            .contains("not a valid TOML value"));
        let empty = Settings::from_layers(None, &env(&[("KAFKA_BROKERS", "")]));
        assert!(empty.unwrap_err().to_string().contains("may not be empty"));
        let not_toml = Settings::from_layers(Some((Path::new("bad.toml"), "[kafka")), &[]);
        assert!(not_toml
            .unwrap_err()
            .to_string()
            .starts_with("config file bad.toml:"));
    }

    #[test]
    fn the_example_file_is_complete_and_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../two-micros.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Settings::from_layers(Some((&path, &text)), &[]).unwrap();
        assert_eq!(s, Settings::default(), "the example documents the defaults");
    }
}
