//! KafkaProducer: owns the idempotent producer (`acks=all`) and answers each
//! [`Publish`] with the message's delivery report, so a row counts as published
//! only once the broker has it.
//!
//! Repeated failed deliveries make it restart with a fresh client. A restart
//! drops the producer and builds a new one; messages whose report was pending
//! get an error and their Fetcher publishes them again (the consumer side is
//! idempotent). It must never block
//! the event loop: `send` is awaited, never `flush`ed on the actor's thread.

use actix::prelude::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use shared::config::KafkaSettings;
use shared::error::PublishError;
use shared::messages::{Delivered, Publish, SimulateFailure};

/// Failed deliveries in a row after which the client is replaced.
const RESTART_AFTER_FAILURES: u32 = 3;

pub struct KafkaProducer {
    settings: KafkaSettings,
    producer: Option<FutureProducer>,
    failed_deliveries: u32,
    /// Fault injection: panic in the next delivery.
    panic_next: bool,
}

impl KafkaProducer {
    /// Builds the producer once to surface configuration errors at start-up.
    pub fn new(settings: KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = Self::connect(&settings)?;
        Ok(Self {
            settings,
            producer: Some(producer),
            failed_deliveries: 0,
            panic_next: false,
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
        // Dropping a producer flushes and joins its threads: not on this loop.
        if let Some(producer) = self.producer.take() {
            actix_rt::task::spawn_blocking(move || drop(producer));
        }
    }
}

impl Handler<Publish> for KafkaProducer {
    type Result = ResponseActFuture<Self, Result<Delivered, PublishError>>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        let producer = self.producer.clone();
        let delivery = async move {
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
        };
        let panic_now = std::mem::take(&mut self.panic_next);
        let delivery = async move {
            shared::panic::catch_async(async move {
                if panic_now {
                    panic!("simulated panic in the producer");
                }
                delivery.await
            })
            .await
            .unwrap_or_else(|panic| Err(PublishError::Panicked(panic)))
        };
        Box::pin(delivery.into_actor(self).map(|result, act, ctx| {
            match &result {
                Ok(_) => act.failed_deliveries = 0,
                Err(e @ PublishError::Panicked(_)) => {
                    log::error!("kafka producer: {e}; restarting with a fresh client");
                    ctx.stop();
                }
                Err(e) => {
                    act.failed_deliveries += 1;
                    if act.failed_deliveries >= RESTART_AFTER_FAILURES {
                        log::error!(
                            "kafka producer: {} deliveries failed in a row (last: {e}); restarting with a fresh client",
                            act.failed_deliveries
                        );
                        act.failed_deliveries = 0;
                        ctx.stop();
                    }
                }
            }
            result
        }))
    }
}

impl Handler<SimulateFailure> for KafkaProducer {
    type Result = ();

    fn handle(&mut self, failure: SimulateFailure, ctx: &mut Self::Context) {
        failure.apply("kafka producer", &mut self.panic_next, ctx);
    }
}
