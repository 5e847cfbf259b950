//! What a run did, per source: printed at the end of every run.

use std::fmt;

use shared::messages::{FetchOutcome, RowReport};

use crate::actors::csv_reader::RowError;

/// Failure reasons kept per source for the printed summary (all are logged).
const REASONS_KEPT: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSummary {
    pub source: String,
    pub rows: u64,
    pub downloaded: u64,
    pub already_stored: u64,
    /// Messages delivered (for stored and for failed rows alike).
    pub published: u64,
    /// Rows that could not be stored (bad row, bad id, download failure).
    pub failed: u64,
    /// Rows whose message could not be delivered.
    pub unpublished: u64,
    pub reasons: Vec<String>,
    /// Why the source could not be read (missing file, no header), if so.
    pub error: Option<String>,
    /// SIGTERM/SIGINT arrived before the end of the file.
    pub stopped_early: bool,
}

impl SourceSummary {
    pub fn new(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            ..Self::default()
        }
    }

    pub fn record(&mut self, outcome: Result<(u64, RowReport), RowError>) {
        self.rows += 1;
        match outcome {
            Err(e) => {
                self.failed += 1;
                self.reason(format!(
                    "row {}: {} (skipped, not published)",
                    e.row, e.reason
                ));
                log::warn!("source={} row {}: {}", self.source, e.row, e.reason);
            }
            Ok((row, report)) => {
                match report.fetch {
                    FetchOutcome::Downloaded => self.downloaded += 1,
                    FetchOutcome::AlreadyStored => self.already_stored += 1,
                    FetchOutcome::Failed(reason) => {
                        self.failed += 1;
                        self.reason(format!("row {row}: {reason}"));
                    }
                }
                match report.published {
                    Ok(_) => self.published += 1,
                    Err(reason) => {
                        self.unpublished += 1;
                        self.reason(format!("row {row}: {reason}"));
                    }
                }
            }
        }
    }

    fn reason(&mut self, reason: String) {
        if self.reasons.len() < REASONS_KEPT {
            self.reasons.push(reason);
        }
    }

    pub fn progress_line(&self) -> String {
        format!(
            "source={} rows={} downloaded={} already_stored={} published={} failed={}",
            self.source,
            self.rows,
            self.downloaded,
            self.already_stored,
            self.published,
            self.failed
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub sources: Vec<SourceSummary>,
}

impl RunSummary {
    /// True when no source could be read at all: the run did nothing.
    pub fn could_not_run(&self) -> bool {
        !self.sources.is_empty()
            && self
                .sources
                .iter()
                .all(|s| s.error.is_some() && s.rows == 0)
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dls summary")?;
        let unpublished: u64 = self.sources.iter().map(|s| s.unpublished).sum();
        for s in &self.sources {
            writeln!(
                f,
                "  {:<16} rows={} downloaded={} already_stored={} published={} failed={} unpublished={}{}",
                s.source,
                s.rows,
                s.downloaded,
                s.already_stored,
                s.published,
                s.failed,
                s.unpublished,
                if s.stopped_early { " (stopped before the end of the file)" } else { "" }
            )?;
            if let Some(e) = &s.error {
                writeln!(f, "    source error: {e}")?;
            }
            for r in &s.reasons {
                writeln!(f, "    {r}")?;
            }
            let hidden = (s.failed + s.unpublished).saturating_sub(s.reasons.len() as u64);
            if hidden > 0 {
                writeln!(f, "    ... and {hidden} more (see the log)")?;
            }
        }
        if unpublished > 0 {
            writeln!(
                f,
                "{unpublished} row(s) could not be published: run dls again once Kafka is reachable \
                 (stored files are not downloaded again)"
            )?;
        }
        Ok(())
    }
}
