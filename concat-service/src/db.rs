//! The queries, one function per operation, on a plain connection: the
//! DbActor calls them on its threads, the `cs status`/`cs failures` commands
//! call them directly. Every write that must be atomic is one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use shared::error::DbError;
use shared::messages::{Claim, Consumed, FinishMerge, PartOutcome, ReceivedPart, RejectedMessage};

use crate::schema::{images, parts, rejected_messages};

pub type PgPool = Pool<ConnectionManager<PgConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// A pool that connects lazily: a database that is down at start-up or later
/// shows as errors on use, never as a panic.
pub fn pool(url: &str, size: u32, connect_timeout: Duration) -> PgPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(connect_timeout)
        .connection_customizer(Box::new(SessionSetup))
        .build_unchecked(ConnectionManager::new(url))
}

/// Every pooled connection gets a statement timeout, so a query stuck on a
/// half-dead server comes back as an error instead of blocking a DbActor.
#[derive(Debug)]
struct SessionSetup;

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSetup {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection as _;
        conn.batch_execute("SET statement_timeout = '60s'")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

pub fn db_error(context: &str, e: impl std::fmt::Display) -> DbError {
    DbError {
        message: format!("{context}: {e}"),
        retryable: true,
    }
}

fn query_error(context: &str, e: diesel::result::Error) -> DbError {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    // Errors the same statement would raise again; the rest (connection
    // lost, deadlock, server restarting) may pass.
    let permanent = matches!(
        &e,
        E::DatabaseError(
            K::CheckViolation | K::NotNullViolation | K::ForeignKeyViolation,
            _
        ) | E::DeserializationError(_)
            | E::SerializationError(_)
            | E::QueryBuilderError(_)
    );
    let retryable = !permanent;
    DbError {
        message: format!("{context}: {e}"),
        retryable,
    }
}

/// Applies the embedded migrations that are not applied yet.
pub fn migrate(conn: &mut PgConnection) -> Result<usize, DbError> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| db_error("running migrations", e))?;
    for m in &applied {
        log::info!("applied migration {m}");
    }
    Ok(applied.len())
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = parts)]
#[diesel(treat_none_as_null = true)]
struct PartRow<'a> {
    id: &'a str,
    source: &'a str,
    status: &'a str,
    url: &'a str,
    path: Option<&'a str>,
    size: Option<i64>,
    sha256: Option<&'a str>,
    content_type: Option<&'a str>,
    error: Option<&'a str>,
    topic: &'a str,
    kafka_partition: i32,
    kafka_offset: i64,
}

impl<'a> PartRow<'a> {
    fn from(part: &'a ReceivedPart) -> Self {
        let m = &part.message;
        let (status, file, error) = match &m.outcome {
            PartOutcome::Stored(file) => ("stored", Some(file), None),
            PartOutcome::Failed { error } => ("failed", None, Some(error.as_str())),
        };
        PartRow {
            id: &m.id,
            source: &m.source,
            status,
            url: &m.url,
            path: file.map(|f| f.path.as_str()),
            size: file.map(|f| i64::try_from(f.size).unwrap_or(i64::MAX)),
            sha256: file.map(|f| f.sha256.as_str()),
            content_type: file.map(|f| f.content_type.as_str()),
            error,
            topic: &part.topic,
            kafka_partition: part.partition,
            kafka_offset: part.offset,
        }
    }
}

/// Persists a consumed batch in one transaction and returns the ids that
/// became ready. Idempotent: a message received again changes nothing; a part
/// whose content changed (a new download) replaces the old one until the id is
/// being merged or merged. `sources` are the configured sources: an id is
/// ready when each has a stored part, failed when one of them failed.
pub fn record_parts(
    conn: &mut PgConnection,
    batch: &[Consumed],
    sources: &[String],
) -> Result<Vec<String>, DbError> {
    // Lock ids in a fixed order so concurrent instances cannot deadlock.
    let mut ordered: Vec<&Consumed> = batch.iter().collect();
    ordered.sort_by(|a, b| match (a, b) {
        (Consumed::Part(a), Consumed::Part(b)) => a.message.id.cmp(&b.message.id),
        (Consumed::Part(_), Consumed::Rejected(_)) => std::cmp::Ordering::Less,
        (Consumed::Rejected(_), Consumed::Part(_)) => std::cmp::Ordering::Greater,
        (Consumed::Rejected(_), Consumed::Rejected(_)) => std::cmp::Ordering::Equal,
    });
    conn.transaction(|conn| {
        let mut ready = Vec::new();
        for item in ordered {
            match item {
                Consumed::Part(part) => {
                    if record_part(conn, part, sources)? {
                        ready.push(part.message.id.clone());
                    }
                }
                Consumed::Rejected(r) => record_rejected(conn, r)?,
            }
        }
        ready.dedup();
        Ok(ready)
    })
    .map_err(|e| query_error("recording a batch", e))
}

/// Returns true when this part made the id ready.
fn record_part(
    conn: &mut PgConnection,
    part: &ReceivedPart,
    sources: &[String],
) -> Result<bool, diesel::result::Error> {
    let id = part.message.id.as_str();
    diesel::insert_into(images::table)
        .values(images::id.eq(id))
        .on_conflict_do_nothing()
        .execute(conn)?;
    let state: String = images::table
        .find(id)
        .select(images::state)
        .for_update()
        .first(conn)?;
    if state == "merging" || state == "merged" {
        log::debug!(
            "id={id}: part from {} after the merge started; kept the first",
            part.message.source
        );
        return Ok(false);
    }
    let row = PartRow::from(part);
    let existing: Option<(String, Option<String>, Option<String>)> = parts::table
        .find((id, &part.message.source))
        .select((parts::status, parts::sha256, parts::error))
        .first(conn)
        .optional()?;
    let unchanged = existing.as_ref().is_some_and(|(status, sha, error)| {
        status == row.status && sha.as_deref() == row.sha256 && error.as_deref() == row.error
    });
    if unchanged {
        return Ok(false);
    }
    diesel::insert_into(parts::table)
        .values(&row)
        .on_conflict((parts::id, parts::source))
        .do_update()
        .set(&row)
        .execute(conn)?;

    let rows: Vec<(String, String, Option<String>)> = parts::table
        .filter(parts::id.eq(id))
        .select((parts::source, parts::status, parts::error))
        .load(conn)?;
    let by_source: BTreeMap<&str, (&str, Option<&str>)> = rows
        .iter()
        .map(|(s, st, e)| (s.as_str(), (st.as_str(), e.as_deref())))
        .collect();
    let failures: Vec<String> = sources
        .iter()
        .filter_map(|s| match by_source.get(s.as_str()) {
            Some(("failed", e)) => Some(format!("{s}: {}", e.unwrap_or("failed"))),
            _ => None,
        })
        .collect();
    let stored = sources
        .iter()
        .filter(|s| matches!(by_source.get(s.as_str()), Some(("stored", _))))
        .count();
    let (new_state, error) = if !failures.is_empty() {
        (
            "failed",
            Some(format!("download failed: {}", failures.join("; "))),
        )
    } else if stored == sources.len() {
        ("ready", None)
    } else {
        ("pending", None)
    };
    diesel::update(images::table.find(id))
        .set((
            images::state.eq(new_state),
            images::error.eq(error),
            images::attempts.eq(0),
            images::next_attempt_at.eq(diesel::dsl::now),
            images::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    Ok(new_state == "ready")
}

fn record_rejected(
    conn: &mut PgConnection,
    r: &RejectedMessage,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(rejected_messages::table)
        .values((
            rejected_messages::topic.eq(&r.topic),
            rejected_messages::kafka_partition.eq(r.partition),
            rejected_messages::kafka_offset.eq(r.offset),
            rejected_messages::message_key.eq(&r.key),
            rejected_messages::error.eq(&r.error),
            rejected_messages::payload_excerpt.eq(&r.payload_excerpt),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = BigInt)]
    claim_token: i64,
}

/// Claims up to `max` ids that are ready (and due) or whose merge lease ran
/// out, for `lease_ms`. `FOR UPDATE SKIP LOCKED`: instances never wait for or
/// take each other's ids. Each claim lists its stored parts in `sources` order.
pub fn claim_ready(
    conn: &mut PgConnection,
    max: i64,
    lease_ms: u64,
    claimer: &str,
    sources: &[String],
) -> Result<Vec<Claim>, DbError> {
    conn.transaction(|conn| {
        let claimed: Vec<Claimed> = diesel::sql_query(
            "WITH c AS (
                 SELECT id FROM images
                 WHERE (state = 'ready' AND next_attempt_at <= now())
                    OR (state = 'merging' AND lease_until < now())
                 ORDER BY next_attempt_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             UPDATE images i
             SET state = 'merging', attempts = i.attempts + 1,
                 claim_token = i.claim_token + 1, claimed_by = $3,
                 lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
             FROM c WHERE i.id = c.id
             RETURNING i.id, i.attempts, i.claim_token",
        )
        .bind::<BigInt, _>(max)
        .bind::<BigInt, _>(i64::try_from(lease_ms).unwrap_or(i64::MAX))
        .bind::<Text, _>(claimer)
        .load(conn)?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
        let rows: Vec<(String, String, Option<String>)> = parts::table
            .filter(parts::id.eq_any(&ids))
            .filter(parts::status.eq("stored"))
            .select((parts::id, parts::source, parts::path))
            .load(conn)?;
        Ok(claimed
            .into_iter()
            .map(|c| {
                let parts = sources
                    .iter()
                    .filter_map(|s| {
                        rows.iter()
                            .find(|(id, src, _)| *id == c.id && src == s)
                            .and_then(|(_, _, p)| p.clone())
                    })
                    .collect();
                Claim {
                    id: c.id,
                    attempt: c.attempts,
                    token: c.claim_token,
                    parts,
                }
            })
            .collect())
    })
    .map_err(|e| query_error("claiming ready ids", e))
}

/// Records the end of a merge attempt, only if the claim is still ours
/// (same claim token, still merging): a claim that expired and was taken again
/// elsewhere is not finished twice. Returns whether the claim was still held.
pub fn finish_merge(conn: &mut PgConnection, finish: &FinishMerge) -> Result<bool, DbError> {
    let updated = match finish {
        FinishMerge::Merged { id, token, output } => diesel::sql_query(
            "UPDATE images
             SET state = 'merged', output_path = $3, error = NULL, lease_until = NULL,
                 merged_at = now(), updated_at = now()
             WHERE id = $1 AND claim_token = $2 AND state = 'merging'",
        )
        .bind::<Text, _>(id)
        .bind::<BigInt, _>(token)
        .bind::<Text, _>(output)
        .execute(conn),
        FinishMerge::Failed {
            id,
            token,
            error,
            retry_in_ms,
        } => diesel::sql_query(
            "UPDATE images
             SET state = CASE WHEN $4::BIGINT IS NULL THEN 'failed' ELSE 'ready' END,
                 next_attempt_at = now() + COALESCE($4::BIGINT, 0) * interval '1 millisecond',
                 error = $3, lease_until = NULL, updated_at = now()
             WHERE id = $1 AND claim_token = $2 AND state = 'merging'",
        )
        .bind::<Text, _>(id)
        .bind::<BigInt, _>(token)
        .bind::<Text, _>(error)
        .bind::<Nullable<BigInt>, _>(retry_in_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
        .execute(conn),
    }
    .map_err(|e| query_error("recording a merge", e))?;
    Ok(updated == 1)
}

/// Ids per state, every state listed.
pub fn state_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, DbError> {
    let rows: Vec<(String, i64)> = images::table
        .group_by(images::state)
        .select((images::state, diesel::dsl::count_star()))
        .load(conn)
        .map_err(|e| query_error("counting ids", e))?;
    Ok(["pending", "ready", "merging", "merged", "failed"]
        .iter()
        .map(|s| {
            let n = rows.iter().find(|(st, _)| st == s).map_or(0, |(_, n)| *n);
            (s.to_string(), n)
        })
        .collect())
}

/// What `cs failures` lists: failed ids with their reasons, and the
/// messages that were rejected (`topic/partition@offset`, reason).
#[derive(Debug, Default)]
pub struct Failures {
    pub failed: Vec<(String, String)>,
    pub rejected: Vec<(String, String)>,
}

pub fn failures(conn: &mut PgConnection) -> Result<Failures, DbError> {
    let failed: Vec<(String, Option<String>)> = images::table
        .filter(images::state.eq("failed"))
        .order(images::id)
        .select((images::id, images::error))
        .load(conn)
        .map_err(|e| query_error("listing failures", e))?;
    let rejected: Vec<(String, i32, i64, String)> = rejected_messages::table
        .order((
            rejected_messages::topic,
            rejected_messages::kafka_partition,
            rejected_messages::kafka_offset,
        ))
        .select((
            rejected_messages::topic,
            rejected_messages::kafka_partition,
            rejected_messages::kafka_offset,
            rejected_messages::error,
        ))
        .load(conn)
        .map_err(|e| query_error("listing rejected messages", e))?;
    Ok(Failures {
        failed: failed
            .into_iter()
            .map(|(id, e)| (id, e.unwrap_or_default()))
            .collect(),
        rejected: rejected
            .into_iter()
            .map(|(t, p, o, e)| (format!("{t}/{p}@{o}"), e))
            .collect(),
    })
}
