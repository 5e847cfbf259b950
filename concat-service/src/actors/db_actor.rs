//! DbActor: the only writer of the database. Runs on a `SyncArbiter`, one
//! thread per pooled connection, so diesel's blocking calls never touch an
//! event loop.
//!
//! Every reply comes after its transaction has committed (or failed): the
//! Consumer stores offsets only on `Ok`. It holds no state but the pool, so a
//! restart (the arbiter rebuilds a stopped actor from its factory) loses
//! nothing; an unavailable database is an `Err` with `retryable = true`, never
//! a panic.

use actix::prelude::*;
use shared::error::DbError;
use shared::messages::{Claim, ClaimReady, FinishMerge, RecordParts, SimulateFailure};

use crate::db::{self, PgPool};

pub struct DbActor {
    pool: PgPool,
    /// Configured sources, in merge order.
    sources: Vec<String>,
    /// Fault injection: panic in the next handler.
    panic_next: bool,
}

impl DbActor {
    pub fn new(pool: PgPool, sources: Vec<String>) -> Self {
        Self {
            pool,
            sources,
            panic_next: false,
        }
    }

    fn conn(
        &self,
    ) -> Result<
        diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<diesel::PgConnection>>,
        DbError,
    > {
        self.pool
            .get()
            .map_err(|e| db::db_error("connecting to PostgreSQL", e))
    }
}

impl Actor for DbActor {
    type Context = SyncContext<Self>;
}

impl DbActor {
    /// Runs one handler's work; a panic becomes a retryable error and stops
    /// this actor, which its arbiter rebuilds from the factory.
    fn guarded<R>(
        &mut self,
        ctx: &mut SyncContext<Self>,
        what: &str,
        work: impl FnOnce(&mut Self) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let panic_now = std::mem::take(&mut self.panic_next);
        match shared::panic::catch(|| {
            if panic_now {
                panic!("simulated panic in the db actor");
            }
            work(self)
        }) {
            Ok(result) => result,
            Err(panic) => {
                log::error!("db actor: {what} {panic}; stopping to be rebuilt");
                ctx.stop();
                Err(DbError {
                    message: format!("{what}: {panic}"),
                    retryable: true,
                })
            }
        }
    }
}

impl Handler<RecordParts> for DbActor {
    type Result = Result<Vec<String>, DbError>;

    fn handle(&mut self, msg: RecordParts, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, "recording parts", |this| {
            db::record_parts(&mut *this.conn()?, &msg.0, &this.sources)
        })
    }
}

impl Handler<ClaimReady> for DbActor {
    type Result = Result<Vec<Claim>, DbError>;

    fn handle(&mut self, msg: ClaimReady, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, "claiming", |this| {
            db::claim_ready(
                &mut *this.conn()?,
                msg.max,
                msg.lease_ms,
                &msg.claimer,
                &this.sources,
            )
        })
    }
}

impl Handler<FinishMerge> for DbActor {
    type Result = Result<(), DbError>;

    fn handle(&mut self, msg: FinishMerge, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, "recording a merge", |this| {
            if !db::finish_merge(&mut *this.conn()?, &msg)? {
                log::warn!("{msg:?}: the claim had expired and was taken again; not recorded");
            }
            Ok(())
        })
    }
}

impl Handler<SimulateFailure> for DbActor {
    type Result = ();

    fn handle(&mut self, failure: SimulateFailure, ctx: &mut Self::Context) {
        failure.apply("db actor", &mut self.panic_next, ctx);
    }
}
