//! Kafka client set-up shared by both services: the base client configuration
//! and the creation of the source topics at start-up.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;

/// `bootstrap.servers` plus the user's `kafka.client_overrides`.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in &settings.client_overrides {
        config.set(key, value);
    }
    config
}

/// Creates the topics that do not exist yet, with `kafka.partitions`
/// partitions. Existing topics are left as they are.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &options).await.with_context(|| {
        format!(
            "creating topics {topics:?} on {} (is Kafka running? `make infra-up` starts one)",
            settings.brokers
        )
    })?;
    for result in results {
        match result {
            Ok(topic) => log::info!("created topic {topic} ({} partitions)", settings.partitions),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Retries `ensure_topics` with a growing pause until `patience` is used up:
/// a broker that is still starting is normal, one that never answers is not.
pub async fn ensure_topics_patiently(
    settings: &KafkaSettings,
    topics: &[String],
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(250);
    loop {
        match ensure_topics(settings, topics).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                log::warn!("{e:#}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
