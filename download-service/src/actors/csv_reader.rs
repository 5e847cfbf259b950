//! CsvReader: streams one source's CSV to the Fetcher pool and tallies what
//! became of every row.
//!
//! The file is parsed on the blocking pool and rows flow through a bounded
//! channel, so memory does not grow with the file; at most `in_flight` rows are
//! out with Fetchers at once. Stopping (SIGTERM) stops taking rows from the
//! file; rows already handed out finish. The format is the original one:
//! header `id,path`, every line may end with a trailing comma, the last line
//! may lack its newline; extra columns are ignored.
//!
//! It keeps no state between sources, so a restart loses nothing but the
//! source in progress, whose caller sees the mailbox error.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::StreamExt;
use shared::ids::ImageId;
use shared::messages::{FetchOutcome, FetchRow, RowReport};
use tokio::sync::{mpsc, watch};

use super::fetcher::Fetcher;
use crate::summary::SourceSummary;

/// A row as read, not yet validated. `row` counts data rows from 1 (the
/// header and blank lines are not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub row: u64,
    pub id: String,
    pub url: String,
}

/// A row that could not be read, with its row number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: u64,
    pub reason: String,
}

/// Reads a whole source. The reply comes when every row has an outcome.
#[derive(Message)]
#[rtype(result = "SourceSummary")]
pub struct ReadSource {
    pub name: String,
    pub topic: String,
    pub csv: PathBuf,
    pub fetchers: Vec<Addr<Fetcher>>,
    pub in_flight: usize,
    /// Becomes true when the process should stop taking new rows.
    pub stop: watch::Receiver<bool>,
}

#[derive(Default)]
pub struct CsvReader;

impl Actor for CsvReader {
    type Context = Context<Self>;
}

impl Supervised for CsvReader {
    fn restarting(&mut self, _: &mut Self::Context) {
        log::warn!("csv reader restarting");
    }
}

impl Handler<ReadSource> for CsvReader {
    type Result = ResponseFuture<SourceSummary>;

    fn handle(&mut self, msg: ReadSource, _: &mut Self::Context) -> Self::Result {
        Box::pin(read_source(msg))
    }
}

async fn read_source(msg: ReadSource) -> SourceSummary {
    let mut summary = SourceSummary::new(&msg.name);
    let (tx, rx) = mpsc::channel::<Result<CsvRow, RowError>>(msg.in_flight.max(1) * 2);
    let csv = msg.csv.clone();
    let parser = actix_rt::task::spawn_blocking(move || {
        let file =
            std::fs::File::open(&csv).map_err(|e| format!("cannot open {}: {e}", csv.display()))?;
        parse_rows(std::io::BufReader::new(file), |row| {
            tx.blocking_send(row).is_ok()
        })
        .map_err(|e| format!("{}: {e}", csv.display()))
    });

    let rows =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|row| (row, rx)) },
        );
    let mut stop = msg.stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let next_fetcher = Arc::new(AtomicUsize::new(0));
    let fetchers = Arc::new(msg.fetchers);
    let topic = msg.topic.clone();
    let name = msg.name.clone();
    let mut outcomes = Box::pin(
        rows.take_until(stopped)
            .map(|row| {
                let (fetchers, next, topic, name) = (
                    fetchers.clone(),
                    next_fetcher.clone(),
                    topic.clone(),
                    name.clone(),
                );
                async move {
                    let row = row?;
                    let id = ImageId::parse(&row.id).map_err(|e| RowError {
                        row: row.row,
                        reason: e.to_string(),
                    })?;
                    let fetch = FetchRow {
                        source: name,
                        topic,
                        id,
                        url: row.url,
                    };
                    Ok((row.row, dispatch(&fetchers, &next, fetch).await))
                }
            })
            .buffer_unordered(msg.in_flight.max(1)),
    );

    while let Some(outcome) = outcomes.next().await {
        summary.record(outcome);
        if summary.rows.is_multiple_of(500) {
            log::info!("{}", summary.progress_line());
        }
    }
    // Dropping the stream drops the receiver: a parser still blocked on a
    // full channel (we stopped early) sees it closed and returns.
    drop(outcomes);
    if *msg.stop.borrow() {
        summary.stopped_early = true;
    }
    match parser.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => summary.error = Some(e),
        Err(e) => summary.error = Some(format!("CSV parser failed: {e}")),
    }
    summary
}

/// Sends the row to the next Fetcher; a Fetcher that fails mid-row (stops, or
/// panics and restarts) hands the row back, so it goes to the next one
/// (bounded tries).
async fn dispatch(fetchers: &[Addr<Fetcher>], next: &AtomicUsize, row: FetchRow) -> RowReport {
    let mut last_error = String::new();
    for _ in 0..fetchers.len().clamp(1, 3) {
        let i = next.fetch_add(1, Ordering::Relaxed) % fetchers.len().max(1);
        let Some(fetcher) = fetchers.get(i) else {
            break;
        };
        last_error = match fetcher.send(row.clone()).await {
            Ok(Ok(report)) => return report,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        log::warn!(
            "id={}: fetcher {i} failed ({last_error}); handing the row to another",
            row.id
        );
    }
    RowReport {
        fetch: FetchOutcome::Failed(format!("no fetcher could take the row: {last_error}")),
        published: Err("not published: no fetcher could take the row".into()),
    }
}

/// Parses the CSV, calling `emit` for each row (or row error) in order until
/// it returns false. Fails only when the file as a whole is unusable (no
/// `id`/`path` header).
pub fn parse_rows(
    input: impl Read,
    mut emit: impl FnMut(Result<CsvRow, RowError>) -> bool,
) -> Result<(), String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .byte_headers()
        .map_err(|e| format!("reading the header: {e}"))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| String::from_utf8_lossy(h).trim().eq_ignore_ascii_case(name))
    };
    let (Some(id_col), Some(path_col)) = (column("id"), column("path")) else {
        return Err(format!(
            "the header must name the columns id and path, found {:?}",
            String::from_utf8_lossy(headers.as_slice())
        ));
    };
    let mut record = csv::ByteRecord::new();
    let mut row_number = 0;
    loop {
        row_number += 1;
        let row = match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => row_from(&record, row_number, id_col, path_col),
            Err(e) => Err(RowError {
                row: row_number,
                reason: format!("unreadable row: {e}"),
            }),
        };
        if !emit(row) {
            return Ok(());
        }
    }
}

fn row_from(
    record: &csv::ByteRecord,
    row: u64,
    id_col: usize,
    path_col: usize,
) -> Result<CsvRow, RowError> {
    let field = |i: usize, name: &str| {
        let raw = record.get(i).ok_or_else(|| RowError {
            row,
            reason: format!("no {name} column (the row has {} fields)", record.len()),
        })?;
        let text = std::str::from_utf8(raw).map_err(|_| RowError {
            row,
            reason: format!("the {name} is not UTF-8"),
        })?;
        if text.is_empty() {
            return Err(RowError {
                row,
                reason: format!("the {name} is empty"),
            });
        }
        Ok(text.to_owned())
    };
    Ok(CsvRow {
        row,
        id: field(id_col, "id")?,
        url: field(path_col, "path")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Result<CsvRow, RowError>>, String> {
        let mut rows = Vec::new();
        parse_rows(text.as_bytes(), |r| {
            rows.push(r);
            true
        })?;
        Ok(rows)
    }

    fn ok(row: u64, id: &str, url: &str) -> Result<CsvRow, RowError> {
        Ok(CsvRow {
            row,
            id: id.into(),
            url: url.into(),
        })
    }

    #[test]
    fn the_original_format_parses_verbatim() {
        // Trailing comma on every line, header included, and no final newline.
        let text =
            "id,path,\n1,https://img.example/superman.jpg,\n2,https://img.example/batman.png,";
        assert_eq!(
            parse(text).unwrap(),
            [
                ok(1, "1", "https://img.example/superman.jpg"),
                ok(2, "2", "https://img.example/batman.png"),
            ]
        );
    }

    #[test]
    fn plain_csv_crlf_bom_and_blank_lines_parse_too() {
        let text = "\u{feff}id,path\r\n 7 , http://h/7.jpg \r\n\r\n8,http://h/8.jpg\r\n";
        assert_eq!(
            parse(text).unwrap(),
            [ok(1, "7", "http://h/7.jpg"), ok(2, "8", "http://h/8.jpg")]
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        let text = "path,extra,id\nhttp://h/1.jpg,x,1\n";
        assert_eq!(parse(text).unwrap(), [ok(1, "1", "http://h/1.jpg")]);
    }

    #[test]
    fn broken_rows_get_their_line_and_reason_and_do_not_stop_the_rest() {
        let text = "id,path,\n1,\n,http://h/x.jpg,\n3\n4,http://h/4.jpg,";
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].as_ref().unwrap_err().reason, "the path is empty");
        assert_eq!(rows[1].as_ref().unwrap_err().reason, "the id is empty");
        assert_eq!(
            rows[2].as_ref().unwrap_err(),
            &RowError {
                row: 3,
                reason: "no path column (the row has 1 fields)".into()
            }
        );
        assert_eq!(rows[3], ok(4, "4", "http://h/4.jpg"));
    }

    #[test]
    fn a_file_without_the_columns_is_refused_as_a_whole() {
        let err = parse("name,url\n1,http://h/1.jpg\n").unwrap_err();
        assert!(err.contains("must name the columns id and path"), "{err}");
        assert!(parse("").unwrap_err().contains("id and path"));
    }
}
