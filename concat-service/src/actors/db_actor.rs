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
}

impl DbActor {
    pub fn new(pool: PgPool, sources: Vec<String>) -> Self {
        Self { pool, sources }
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

impl Handler<RecordParts> for DbActor {
    type Result = Result<Vec<String>, DbError>;

    fn handle(&mut self, msg: RecordParts, _: &mut Self::Context) -> Self::Result {
        db::record_parts(&mut *self.conn()?, &msg.0, &self.sources)
    }
}

impl Handler<ClaimReady> for DbActor {
    type Result = Result<Vec<Claim>, DbError>;

    fn handle(&mut self, msg: ClaimReady, _: &mut Self::Context) -> Self::Result {
        db::claim_ready(
            &mut *self.conn()?,
            msg.max,
            msg.lease_ms,
            &msg.claimer,
            &self.sources,
        )
    }
}

impl Handler<FinishMerge> for DbActor {
    type Result = Result<(), DbError>;

    fn handle(&mut self, msg: FinishMerge, _: &mut Self::Context) -> Self::Result {
        if !db::finish_merge(&mut *self.conn()?, &msg)? {
            log::warn!("{msg:?}: the claim had expired and was taken again; not recorded");
        }
        Ok(())
    }
}

impl Handler<SimulateFailure> for DbActor {
    type Result = ();

    fn handle(&mut self, _: SimulateFailure, ctx: &mut Self::Context) {
        log::warn!("db actor: failure requested, stopping to be rebuilt");
        ctx.stop();
    }
}
