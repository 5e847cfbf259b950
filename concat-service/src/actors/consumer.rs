//! Consumer: reads every source topic in one consumer group and hands the
//! messages, in batches, to the DbActor.
//!
//! Guarantee: an offset is stored for commit only after the DbActor replied
//! `Ok`, i.e. after the batch's transaction committed (`enable.auto.offset.store
//! = false`; `store_offset` with the message's own offset stores offset + 1,
//! the next to read, as librdkafka documents). Batches are handled one at a
//! time, so an offset is never stored past an unpersisted earlier one.
//! Re-delivery after a crash is normal and absorbed by the idempotent upsert.
//!
//! While the database is unavailable it retries the batch in place and stores
//! nothing; only when that lasts longer than the retry window does it stop,
//! and its supervisor restarts it after a growing pause, with a fresh Kafka
//! consumer that resumes from the committed offsets. It never decodes images
//! or touches files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use shared::config::{ConsumerSettings, KafkaSettings};
use shared::messages::{
    Consumed, Drain, IdReady, PartMessage, ReceivedPart, RecordParts, RejectedMessage,
    SimulateFailure,
};

use super::combiner::Combiner;
use super::db_actor::DbActor;

/// Longest pause between restarts after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a batch is retried while the database is unavailable; below
/// `max.poll.interval.ms` (set to [`MAX_POLL_INTERVAL`]).
const DB_RETRY_WINDOW: Duration = Duration::from_secs(240);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// Nothing but errors from Kafka for this long: start a fresh client.
const STUCK_AFTER: Duration = Duration::from_secs(20);
/// Bytes of an unreadable payload kept for the user to see.
const EXCERPT_BYTES: usize = 200;

pub struct Consumer {
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    /// topic -> source name.
    topics: Arc<HashMap<String, String>>,
    db: Addr<DbActor>,
    combiner: Addr<Combiner>,
    consumer: Option<Arc<StreamConsumer>>,
    batch: Option<SpawnHandle>,
    /// Failures in a row; sets the pause before the next connection.
    failures: u32,
    draining: bool,
    /// Fault injection: panic while handling the next batch.
    panic_next: bool,
}

impl Consumer {
    pub fn new(
        kafka: KafkaSettings,
        settings: ConsumerSettings,
        topics: HashMap<String, String>,
        db: Addr<DbActor>,
        combiner: Addr<Combiner>,
    ) -> Self {
        Self {
            kafka,
            settings,
            topics: Arc::new(topics),
            db,
            combiner,
            consumer: None,
            batch: None,
            failures: 0,
            draining: false,
            panic_next: false,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let mut config = shared::kafka::client_config(&self.kafka);
        config
            .set("group.id", &self.settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                self.settings.session_timeout_ms.to_string(),
            )
            .set(
                "max.poll.interval.ms",
                MAX_POLL_INTERVAL.as_millis().to_string(),
            );
        let consumer: StreamConsumer = match config.create() {
            Ok(c) => c,
            Err(e) => return self.fail(ctx, format!("creating the Kafka consumer: {e}")),
        };
        let topics: Vec<&str> = self.topics.keys().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            return self.fail(ctx, format!("subscribing to {topics:?}: {e}"));
        }
        log::info!(
            "consumer: subscribed to {topics:?} as group {}",
            self.settings.group_id
        );
        self.consumer = Some(Arc::new(consumer));
        self.poll(ctx);
    }

    /// Reads the next batch, persists it, stores its offsets, repeats.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(consumer) = self.consumer.clone() else {
            return;
        };
        if self.draining {
            return;
        }
        let (db, topics, max) = (
            self.db.clone(),
            self.topics.clone(),
            self.settings.batch_size,
        );
        let panic_now = std::mem::take(&mut self.panic_next);
        let work = shared::panic::catch_async(async move {
            let batch = match next_batch(&consumer, &topics, max).await {
                Ok(batch) => batch,
                Err(stuck) => return (Vec::new(), Err(stuck)),
            };
            if panic_now {
                panic!("simulated panic in the consumer");
            }
            let items: Vec<Consumed> = batch.iter().map(|(c, _)| c.clone()).collect();
            let result = persist(&db, items).await;
            (batch, result)
        });
        let handle = ctx.spawn(work.into_actor(self).map(|outcome, act, ctx| {
            act.batch = None;
            let (batch, result) = match outcome {
                Ok(done) => done,
                Err(panic) => return act.fail(ctx, format!("batch processing {panic}")),
            };
            match result {
                Ok(ready) => {
                    act.store_offsets(&batch);
                    act.failures = 0;
                    for id in ready {
                        act.combiner.do_send(IdReady(id));
                    }
                    act.poll(ctx);
                }
                Err(e) => act.fail(ctx, format!("batch of {} not persisted: {e}", batch.len())),
            }
        }));
        self.batch = Some(handle);
    }

    fn store_offsets(&self, batch: &[(Consumed, Position)]) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        for (_, (topic, partition, offset)) in batch {
            // Fails only for a partition revoked meanwhile: its new owner
            // re-reads the message, which the upsert absorbs.
            if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
                log::warn!("{topic}/{partition}@{offset}: offset not stored: {e}");
            }
        }
    }

    /// Logs, then stops: the supervisor restarts the actor after a pause.
    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.failures += 1;
        log::error!(
            "consumer: {reason}; restarting (failure {} in a row)",
            self.failures
        );
        ctx.stop();
    }
}

type Position = (String, i32, i64);

impl Actor for Consumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        let pause = backoff(self.failures);
        if pause.is_zero() {
            self.connect(ctx);
        } else {
            log::info!("consumer: reconnecting in {pause:?}");
            ctx.run_later(pause, |act, ctx| act.connect(ctx));
        }
    }
}

impl Supervised for Consumer {
    fn restarting(&mut self, _: &mut Self::Context) {
        log::warn!("consumer restarting");
        self.batch = None;
        // Closing a consumer waits for the broker (long when it is down):
        // never on this event loop.
        if let Some(consumer) = self.consumer.take() {
            actix_rt::task::spawn_blocking(move || drop(consumer));
        }
    }
}

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let ms = 500u64.saturating_mul(1 << failures.min(10).saturating_sub(1));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// Persists a batch, riding out a database outage: retryable errors are
/// retried in place with a growing pause for up to [`DB_RETRY_WINDOW`] (less
/// than `max.poll.interval.ms`, so the group keeps us), nothing is stored
/// meanwhile. A message the database refuses for good is recorded as rejected
/// with the reason instead, so one bad message cannot block a partition.
async fn persist(db: &Addr<DbActor>, items: Vec<Consumed>) -> Result<Vec<String>, String> {
    let deadline = std::time::Instant::now() + DB_RETRY_WINDOW;
    match persist_retrying(db, items.clone(), deadline).await {
        Err(PersistError::Permanent(e)) if items.len() > 1 => {
            log::warn!("consumer: batch refused ({e}); persisting its messages one by one");
            let mut ready = Vec::new();
            for item in items {
                ready.extend(persist_one(db, item, deadline).await?);
            }
            Ok(ready)
        }
        Err(PersistError::Permanent(_)) => match items.into_iter().next() {
            Some(item) => persist_one(db, item, deadline).await,
            None => Ok(Vec::new()),
        },
        Err(PersistError::GaveUp(e)) => Err(e),
        Ok(ready) => Ok(ready),
    }
}

async fn persist_one(
    db: &Addr<DbActor>,
    item: Consumed,
    deadline: std::time::Instant,
) -> Result<Vec<String>, String> {
    match persist_retrying(db, vec![item.clone()], deadline).await {
        Ok(ready) => Ok(ready),
        Err(PersistError::GaveUp(e)) => Err(e),
        Err(PersistError::Permanent(e)) => {
            let Consumed::Part(part) = item else {
                return Err(format!("a rejected message could not be recorded: {e}"));
            };
            log::error!(
                "{}/{}@{}: not persisted ({e}); recorded as rejected",
                part.topic,
                part.partition,
                part.offset
            );
            let rejected = Consumed::Rejected(RejectedMessage {
                topic: part.topic,
                partition: part.partition,
                offset: part.offset,
                key: Some(part.message.id.clone()),
                error: format!("not persisted: {e}"),
                payload_excerpt: serde_json::to_string(&part.message).unwrap_or_default(),
            });
            persist_retrying(db, vec![rejected], deadline)
                .await
                .map_err(|e| match e {
                    PersistError::GaveUp(e) | PersistError::Permanent(e) => e,
                })
        }
    }
}

enum PersistError {
    /// The same data will fail again.
    Permanent(String),
    /// Still failing at the end of the retry window.
    GaveUp(String),
}

async fn persist_retrying(
    db: &Addr<DbActor>,
    items: Vec<Consumed>,
    deadline: std::time::Instant,
) -> Result<Vec<String>, PersistError> {
    let mut pause = Duration::from_millis(250);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let reply = actix_rt::time::timeout(left, db.send(RecordParts(items.clone()))).await;
        let error = match reply {
            Err(_) => {
                return Err(PersistError::GaveUp(
                    "the database did not answer in time".into(),
                ))
            }
            Ok(Ok(Ok(ready))) => return Ok(ready),
            Ok(Ok(Err(e))) if !e.retryable => return Err(PersistError::Permanent(e.to_string())),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => format!("db actor unavailable: {e}"),
        };
        if std::time::Instant::now() + pause > deadline {
            return Err(PersistError::GaveUp(error));
        }
        log::warn!("consumer: {error}; retrying in {pause:?} (offsets wait)");
        actix_rt::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Waits for one message, then takes whatever else is already there, up to
/// `max`. Errors while waiting (broker down) are logged and waited out; when
/// nothing but errors has come for [`STUCK_AFTER`], it gives up so that the
/// actor restarts with a fresh client: librdkafka was seen to stay at "all
/// brokers down" after a broker restart while the broker was back.
async fn next_batch(
    consumer: &StreamConsumer,
    topics: &HashMap<String, String>,
    max: usize,
) -> Result<Vec<(Consumed, Position)>, String> {
    let mut out = Vec::new();
    let mut errors_since: Option<std::time::Instant> = None;
    loop {
        match consumer.recv().await {
            Ok(m) => {
                out.push(convert(&m, topics));
                break;
            }
            Err(e) => {
                let since = *errors_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > STUCK_AFTER {
                    return Err(format!(
                        "only errors from Kafka for {:?} (last: {e}); reconnecting with a fresh client",
                        since.elapsed()
                    ));
                }
                log::warn!("consumer: {e}");
                actix_rt::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    while out.len() < max {
        match consumer.recv().now_or_never() {
            Some(Ok(m)) => out.push(convert(&m, topics)),
            Some(Err(e)) => {
                log::warn!("consumer: {e}");
                break;
            }
            None => break,
        }
    }
    Ok(out)
}

/// Bytes as text PostgreSQL can store: lossy UTF-8, NUL shown as U+FFFD.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{fffd}")
}

/// A message as a part to record, or as a rejected message with the reason.
fn convert(m: &BorrowedMessage<'_>, topics: &HashMap<String, String>) -> (Consumed, Position) {
    let position = (m.topic().to_owned(), m.partition(), m.offset());
    let payload = m.payload().unwrap_or_default();
    let parsed = PartMessage::from_json(payload).and_then(|message| match topics.get(m.topic()) {
        Some(source) if *source == message.source => Ok(message),
        Some(source) => Err(format!(
            "message says source {:?} but topic {} belongs to source {source:?}",
            message.source,
            m.topic()
        )),
        None => Err(format!("topic {} is not a configured source", m.topic())),
    });
    let consumed = match parsed {
        Ok(message) => Consumed::Part(ReceivedPart {
            message,
            topic: position.0.clone(),
            partition: position.1,
            offset: position.2,
        }),
        Err(error) => {
            log::error!(
                "{}/{}@{}: rejected: {error}",
                position.0,
                position.1,
                position.2
            );
            Consumed::Rejected(RejectedMessage {
                topic: position.0.clone(),
                partition: position.1,
                offset: position.2,
                key: m.key().map(printable),
                error,
                payload_excerpt: printable(&payload[..payload.len().min(EXCERPT_BYTES)]),
            })
        }
    };
    (consumed, position)
}

impl Handler<Drain> for Consumer {
    type Result = ResponseFuture<()>;

    /// Stops reading. A batch whose reply has not arrived is dropped unstored
    /// (Kafka re-delivers it; the upsert absorbs it); stored offsets are
    /// committed synchronously before the reply.
    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        if let Some(handle) = self.batch.take() {
            ctx.cancel_future(handle);
        }
        let consumer = self.consumer.take();
        Box::pin(async move {
            let Some(consumer) = consumer else { return };
            let committed = actix_rt::task::spawn_blocking(move || {
                let result = consumer.commit_consumer_state(CommitMode::Sync);
                consumer.unsubscribe();
                result
            })
            .await;
            match committed {
                Ok(Ok(())) => log::info!("consumer: offsets committed"),
                Ok(Err(e)) => log::info!("consumer: final commit: {e}"),
                Err(e) => log::warn!("consumer: final commit failed: {e}"),
            }
        })
    }
}

impl Handler<SimulateFailure> for Consumer {
    type Result = ();

    fn handle(&mut self, failure: SimulateFailure, ctx: &mut Self::Context) {
        match failure {
            SimulateFailure::Stop => self.fail(ctx, "failure requested".into()),
            SimulateFailure::Panic => self.panic_next = true,
        }
    }
}
