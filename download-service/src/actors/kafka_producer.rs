//! KafkaProducer: owns the idempotent producer (`acks=all`) and answers each
//! [`Publish`] with the message's delivery report, so a row counts as published
//! only once the broker has it.
//!
//! A restart drops the producer and builds a new one; messages whose report was
//! pending get an error and their Fetcher reports the row unpublished (a rerun
//! publishes it again: the consumer side is idempotent). It must never block
//! the event loop: `send` is awaited, never `flush`ed on the actor's thread.

use std::time::Duration;

use actix::prelude::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use shared::config::KafkaSettings;
use shared::error::PublishError;
use shared::messages::{Delivered, Publish, SimulateFailure};

pub struct KafkaProducer {
    settings: KafkaSettings,
    producer: Option<FutureProducer>,
}

impl KafkaProducer {
    /// Builds the producer once to surface configuration errors at start-up.
    pub fn new(settings: KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = Self::connect(&settings)?;
        Ok(Self {
            settings,
            producer: Some(producer),
        })
    }

    fn config(settings: &KafkaSettings) -> ClientConfig {
        let mut config = shared::kafka::client_config(settings);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                settings.message_timeout_ms.to_string(),
            );
        config
    }

    fn connect(settings: &KafkaSettings) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        Self::config(settings).create()
    }

    /// Waits up to `timeout` for messages still queued (used at shutdown).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer as _;
        if let Some(producer) = &self.producer {
            if let Err(e) = producer.flush(Timeout::After(timeout)) {
                log::warn!("flushing the producer: {e}");
            }
        }
    }
}

impl Actor for KafkaProducer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.producer.is_none() {
            match Self::connect(&self.settings) {
                Ok(producer) => self.producer = Some(producer),
                Err(e) => {
                    log::error!("creating the Kafka producer: {e}");
                    ctx.stop();
                }
            }
        }
    }
}

impl Supervised for KafkaProducer {
    fn restarting(&mut self, _: &mut Self::Context) {
        log::warn!("kafka producer restarting");
        self.producer = None;
    }
}

impl Handler<Publish> for KafkaProducer {
    type Result = ResponseFuture<Result<Delivered, PublishError>>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        let producer = self.producer.clone();
        Box::pin(async move {
            let id = msg.message.id.clone();
            let producer =
                producer.ok_or_else(|| PublishError::Mailbox("producer not connected".into()))?;
            let payload = msg
                .message
                .to_json()
                .map_err(|source| PublishError::Encode {
                    id: id.clone(),
                    source,
                })?;
            let record = FutureRecord::to(&msg.topic).key(&id).payload(&payload);
            // Queue-full waits; the delivery itself is bounded by message.timeout.ms.
            match producer.send(record, Timeout::Never).await {
                Ok(d) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Err((e, _)) => Err(PublishError::Delivery {
                    id,
                    topic: msg.topic,
                    reason: e.to_string(),
                }),
            }
        })
    }
}

impl Handler<SimulateFailure> for KafkaProducer {
    type Result = ();

    fn handle(&mut self, _: SimulateFailure, ctx: &mut Self::Context) {
        // Both kinds stop the actor: dls has no panic-prone work of its own
        // outside the blocking pool, whose panics already come back as errors.
        log::warn!("kafka producer: failure requested, stopping for a restart");
        ctx.stop();
    }
}
