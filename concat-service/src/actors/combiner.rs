//! Combiner: owns merge scheduling. It claims ready ids in PostgreSQL
//! (`FOR UPDATE SKIP LOCKED`, with a lease) as soon as it hears of one
//! ([`IdReady`]) and on a periodic sweep, and runs each merge on the blocking
//! pool, at most `merge.workers` at once.
//!
//! A claim whose lease runs out (a crash, a restart of this actor) is claimed
//! again by any instance, so nothing is stranded; finishing checks the claim,
//! so an id is never recorded merged twice. A failed merge is retried with a
//! doubling delay, then recorded `failed` with its error. It keeps only
//! counters; merges in flight survive its restart (they run as tasks of their
//! own), and claims of a crashed process expire and are taken again.

use std::time::Duration;

use actix::prelude::*;
use shared::config::MergeSettings;
use shared::error::MergeError;
use shared::ids::{ImageId, StoragePath, CONCAT_FOLDER};
use shared::messages::{
    Claim, ClaimReady, Drain, FinishMerge, IdReady, MergeFinished, SimulateFailure,
};
use shared::storage::Storage;
use tokio::sync::oneshot;

use super::db_actor::DbActor;
use crate::merge;

/// The longest pause between two tries of one id.
const MAX_RETRY_DELAY_MS: u64 = 5 * 60 * 1000;

pub struct Combiner {
    settings: MergeSettings,
    sources: usize,
    storage: Storage,
    /// Temporary files older than this in `concat/` are leftovers of a crash.
    stale_temp: Duration,
    db: Addr<DbActor>,
    /// Who claims: unique per process start.
    claimer: String,
    workers: usize,
    in_flight: usize,
    claiming: bool,
    /// Heard of ready ids while a claim was running: claim again after it.
    again: bool,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
    /// Fault injection: the next merge panics (on the blocking pool).
    panic_next: bool,
}

impl Combiner {
    pub fn new(
        settings: MergeSettings,
        sources: usize,
        storage: Storage,
        stale_temp: Duration,
        db: Addr<DbActor>,
    ) -> Self {
        let claimer = format!(
            "cs-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        Self {
            workers: settings.worker_count(),
            settings,
            sources,
            storage,
            stale_temp: stale_temp.max(Duration::from_secs(1)),
            db,
            claimer,
            in_flight: 0,
            claiming: false,
            again: false,
            draining: false,
            drained: Vec::new(),
            panic_next: false,
        }
    }

    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let free = self.workers.saturating_sub(self.in_flight);
        if self.claiming || free == 0 {
            self.again = true;
            return;
        }
        self.claiming = true;
        self.again = false;
        let request = ClaimReady {
            max: i64::try_from(free).unwrap_or(1),
            lease_ms: self.settings.lease_ms,
            claimer: self.claimer.clone(),
        };
        ctx.spawn(
            self.db
                .send(request)
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.claiming = false;
                    match result {
                        Ok(Ok(claims)) if act.draining => {
                            for claim in claims {
                                act.release(claim, ctx);
                            }
                            act.notify_if_drained();
                        }
                        Ok(Ok(claims)) => {
                            let full = claims.len() == free;
                            for claim in claims {
                                act.merge(claim, ctx);
                            }
                            if full || act.again {
                                act.claim(ctx);
                            }
                        }
                        Ok(Err(e)) => {
                            log::warn!("combiner: claiming failed ({e}); the sweep tries again");
                            act.notify_if_drained();
                        }
                        Err(e) => log::warn!(
                            "combiner: db actor unavailable ({e}); the sweep tries again"
                        ),
                    }
                }),
        );
    }

    fn merge(&mut self, claim: Claim, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        let panic_now = std::mem::take(&mut self.panic_next);
        let (storage, settings, sources) =
            (self.storage.clone(), self.settings.clone(), self.sources);
        let db = self.db.clone();
        let work = async move {
            let started = std::time::Instant::now();
            let outcome: Result<StoragePath, (String, bool)> =
                if claim.attempt > settings.max_attempts {
                    Err((
                        format!(
                            "the merge was abandoned {} times (crash or timeout while merging?)",
                            claim.attempt - 1
                        ),
                        false,
                    ))
                } else {
                    run_merge(storage, &claim, sources, settings.clone(), panic_now)
                        .await
                        .map_err(|e| (e.to_string(), e.is_retryable()))
                };
            let finish = match outcome {
                Ok(output) => {
                    log::info!(
                        "id={} merged into {output} in {:?}",
                        claim.id,
                        started.elapsed()
                    );
                    FinishMerge::Merged {
                        id: claim.id.clone(),
                        token: claim.token,
                        output: output.to_string(),
                    }
                }
                Err((error, retryable)) => {
                    let retry = (retryable && claim.attempt < settings.max_attempts)
                        .then(|| retry_delay(&settings, claim.attempt));
                    log::warn!(
                        "id={} merge attempt {} failed: {error}{}",
                        claim.id,
                        claim.attempt,
                        retry.map_or(" (recorded as failed)".to_owned(), |ms| format!(
                            " (retry in {ms} ms)"
                        ))
                    );
                    FinishMerge::Failed {
                        id: claim.id.clone(),
                        token: claim.token,
                        error,
                        retry_in_ms: retry,
                    }
                }
            };
            let recorded = match db.send(finish).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = recorded {
                log::warn!(
                    "id={}: result not recorded ({e}); the lease expires and it is merged again",
                    claim.id
                );
            }
        };
        // A task of its own, not tied to this actor's context: a restart of
        // the Combiner does not abandon merges in flight; they finish, record
        // their result and report back to whichever Combiner is running.
        let me = ctx.address();
        actix_rt::spawn(async move {
            if let Err(panic) = shared::panic::catch_async(work).await {
                log::error!("combiner: merge task {panic}; its claim expires and is taken again");
            }
            me.do_send(MergeFinished);
        });
    }
}

impl Combiner {
    /// Deletes what a crash left half-written in `concat/` (on the blocking pool).
    fn remove_stale_temp_files(&self) {
        let (storage, stale) = (self.storage.clone(), self.stale_temp);
        actix_rt::task::spawn_blocking(move || {
            match storage.remove_stale_temp_files(CONCAT_FOLDER, stale) {
                Ok(0) => {}
                Ok(n) => {
                    log::info!("combiner: removed {n} stale temporary file(s) in {CONCAT_FOLDER}/")
                }
                Err(e) => log::warn!("combiner: cleaning temporary files: {e}"),
            }
        });
    }
}

impl Combiner {
    /// Draining, nothing in flight and no claim pending: tell the waiters.
    fn notify_if_drained(&mut self) {
        if self.draining && self.in_flight == 0 && !self.claiming {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Gives a claim back (claimed just as shutdown began): ready again now.
    fn release(&mut self, claim: Claim, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        let (db, me) = (self.db.clone(), ctx.address());
        actix_rt::spawn(async move {
            let release = FinishMerge::Failed {
                id: claim.id.clone(),
                token: claim.token,
                error: "released at shutdown before merging".into(),
                retry_in_ms: Some(0),
            };
            if !matches!(db.send(release).await, Ok(Ok(()))) {
                log::warn!("id={}: not released; its lease expires instead", claim.id);
            }
            me.do_send(MergeFinished);
        });
    }
}

impl Handler<MergeFinished> for Combiner {
    type Result = ();

    fn handle(&mut self, _: MergeFinished, ctx: &mut Self::Context) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.draining {
            self.notify_if_drained();
        } else {
            self.claim(ctx);
        }
    }
}

/// Checks the claim and merges on the blocking pool; a panic there comes
/// back as an error.
async fn run_merge(
    storage: Storage,
    claim: &Claim,
    sources: usize,
    settings: MergeSettings,
    panic_now: bool,
) -> Result<StoragePath, MergeError> {
    if claim.parts.len() != sources {
        return Err(MergeError::MissingParts {
            stored: claim.parts.len(),
            wanted: sources,
        });
    }
    let id = ImageId::parse(&claim.id).map_err(shared::error::StoreError::from)?;
    let parts = claim
        .parts
        .iter()
        .map(|p| StoragePath::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(shared::error::StoreError::from)?;
    actix_rt::task::spawn_blocking(move || {
        if panic_now {
            panic!("simulated panic in a merge");
        }
        merge::merge_parts(&storage, &id, &parts, &settings)
    })
    .await
    .unwrap_or_else(|e| Err(MergeError::Panicked(e.to_string())))
}

fn retry_delay(settings: &MergeSettings, attempt: i32) -> u64 {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    settings
        .retry_backoff_ms
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY_MS)
}

impl Actor for Combiner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.remove_stale_temp_files();
        ctx.run_interval(self.stale_temp, |act, _| act.remove_stale_temp_files());
        ctx.run_interval(
            Duration::from_millis(self.settings.sweep_interval_ms.max(10)),
            |act, ctx| act.claim(ctx),
        );
        self.claim(ctx);
    }
}

impl Supervised for Combiner {
    fn restarting(&mut self, _: &mut Self::Context) {
        // Merges in flight run on as tasks of their own and report back with
        // MergeFinished; only the claim request in flight (if any) is lost.
        log::warn!("combiner restarting");
        self.claiming = false;
        self.again = false;
    }
}

impl Handler<IdReady> for Combiner {
    type Result = ();

    fn handle(&mut self, _: IdReady, ctx: &mut Self::Context) {
        self.claim(ctx);
    }
}

impl Handler<Drain> for Combiner {
    type Result = ResponseFuture<()>;

    /// Stops claiming; replies when the merges in flight are finished.
    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        self.notify_if_drained();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<SimulateFailure> for Combiner {
    type Result = ();

    fn handle(&mut self, failure: SimulateFailure, ctx: &mut Self::Context) {
        failure.apply("combiner", &mut self.panic_next, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_are_capped() {
        let s = MergeSettings::default();
        assert_eq!(retry_delay(&s, 1), 1_000);
        assert_eq!(retry_delay(&s, 2), 2_000);
        assert_eq!(retry_delay(&s, 4), 8_000);
        assert_eq!(retry_delay(&s, 30), MAX_RETRY_DELAY_MS);
    }
}
