//! Fetcher: turns one CSV row into a stored file and a published message.
//!
//! For a [`FetchRow`] it downloads the URL with awc (connect and total
//! timeouts, a size limit, retries with backoff for errors that may pass),
//! names the file by the bytes' magic number, writes it atomically on the
//! blocking pool and hands the result to the KafkaProducer. A row that fails
//! is published too, as a `failed` part with its reason, so the concat side
//! records the id as failed instead of waiting for it forever.
//!
//! It owns only its HTTP client; a restart builds a new one. It never touches
//! the file system on its own thread. Rows are handled one at a time per
//! Fetcher (`AtomicResponse`): the pool size is the download concurrency.

use std::time::Duration;

use actix::prelude::*;
use shared::config::DownloadSettings;
use shared::error::{FetchError, StoreError};
use shared::ids::{ImageId, StoragePath};
use shared::image_kind::ImageKind;
use shared::messages::{
    Delivered, FetchOutcome, FetchRow, PartMessage, PartOutcome, Publish, RowReport,
    SimulateFailure, StoredFile, MESSAGE_VERSION,
};
use shared::storage::{sha256_hex, Storage};

use super::kafka_producer::KafkaProducer;

pub struct Fetcher {
    settings: DownloadSettings,
    storage: Storage,
    producer: Addr<KafkaProducer>,
    client: Option<awc::Client>,
    /// Fault injection: panic while handling the next row.
    panic_next: bool,
}

impl Fetcher {
    pub fn new(
        settings: DownloadSettings,
        storage: Storage,
        producer: Addr<KafkaProducer>,
    ) -> Self {
        Self {
            settings,
            storage,
            producer,
            client: None,
            panic_next: false,
        }
    }

    fn client(&mut self) -> awc::Client {
        self.client
            .get_or_insert_with(|| {
                let connector = awc::Connector::new()
                    .timeout(Duration::from_millis(self.settings.connect_timeout_ms));
                awc::Client::builder()
                    .connector(connector)
                    .timeout(Duration::from_millis(self.settings.request_timeout_ms))
                    .finish()
            })
            .clone()
    }
}

impl Actor for Fetcher {
    type Context = Context<Self>;
}

impl Supervised for Fetcher {
    fn restarting(&mut self, _: &mut Self::Context) {
        log::warn!("fetcher restarting");
        self.client = None;
    }
}

impl Handler<FetchRow> for Fetcher {
    type Result = AtomicResponse<Self, Result<RowReport, String>>;

    fn handle(&mut self, row: FetchRow, _: &mut Self::Context) -> Self::Result {
        let job = RowJob {
            client: self.client(),
            settings: self.settings.clone(),
            storage: self.storage.clone(),
            producer: self.producer.clone(),
        };
        let panic_now = std::mem::take(&mut self.panic_next);
        let work = shared::panic::catch_async(async move {
            if panic_now {
                panic!("simulated panic in a fetcher");
            }
            job.run(row).await
        });
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, _, ctx| {
            result.map_err(|panic| {
                // A bug, not the input: restart clean; the row goes to another Fetcher.
                log::error!("fetcher: {panic}; restarting");
                ctx.stop();
                format!("the fetcher {panic}")
            })
        })))
    }
}

impl Handler<SimulateFailure> for Fetcher {
    type Result = ();

    fn handle(&mut self, failure: SimulateFailure, ctx: &mut Self::Context) {
        failure.apply("fetcher", &mut self.panic_next, ctx);
    }
}

/// Everything one row needs, owned, so the work is a plain future.
struct RowJob {
    client: awc::Client,
    settings: DownloadSettings,
    storage: Storage,
    producer: Addr<KafkaProducer>,
}

impl RowJob {
    async fn run(self, row: FetchRow) -> RowReport {
        let (fetch, outcome) = match self.store(&row).await {
            Ok((fetch, file)) => (fetch, PartOutcome::Stored(file)),
            Err(e) => {
                log::warn!("source={} id={}: {e}", row.source, row.id);
                (
                    FetchOutcome::Failed(e.to_string()),
                    PartOutcome::Failed {
                        error: e.to_string(),
                    },
                )
            }
        };
        let message = PartMessage {
            version: MESSAGE_VERSION,
            id: row.id.to_string(),
            source: row.source.clone(),
            url: row.url.clone(),
            outcome,
        };
        let published = self.publish(&row.topic, message).await;
        if let Err(e) = &published {
            log::error!("source={} id={}: not published: {e}", row.source, row.id);
        }
        RowReport { fetch, published }
    }

    /// Publishes and waits for the delivery report; a failed delivery (the
    /// producer gives up after `kafka.message_timeout_ms`) is tried again, up
    /// to `download.attempts` times: an outage of attempts x timeout is ridden
    /// out. Rows still unpublished show in the summary; a rerun publishes them.
    async fn publish(&self, topic: &str, message: PartMessage) -> Result<Delivered, String> {
        // A producer restarting (mailbox closed) is not the delivery's fault:
        // such tries do not count against `attempts`, up to a bound.
        const MAX_PRODUCER_RESTARTS: u32 = 20;
        let mut pause = Duration::from_millis(self.settings.retry_backoff_ms);
        let (mut failed, mut restarts) = (0, 0);
        loop {
            let request = Publish {
                topic: topic.to_owned(),
                message: message.clone(),
            };
            let error = match self.producer.send(request).await {
                Ok(Ok(delivered)) => return Ok(delivered),
                Ok(Err(e)) => {
                    failed += 1;
                    e.to_string()
                }
                Err(e) => {
                    restarts += 1;
                    format!("producer unavailable: {e}")
                }
            };
            if failed >= self.settings.attempts || restarts > MAX_PRODUCER_RESTARTS {
                return Err(error);
            }
            log::warn!("id={}: {error}; publishing again in {pause:?}", message.id);
            actix_rt::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    /// The stored file for the row: the one from an earlier run when allowed,
    /// else a fresh download.
    async fn store(&self, row: &FetchRow) -> Result<(FetchOutcome, StoredFile), FetchError> {
        if self.settings.skip_existing {
            let storage = self.storage.clone();
            let (source, id) = (row.source.clone(), row.id.clone());
            let existing = blocking(move || existing_file(&storage, &source, &id))
                .await
                .map_err(|source| FetchError::Store {
                    url: row.url.clone(),
                    source,
                })?;
            if let Some(file) = existing {
                log::debug!(
                    "source={} id={}: already stored as {}",
                    row.source,
                    row.id,
                    file.path
                );
                return Ok((FetchOutcome::AlreadyStored, file));
            }
        }
        let bytes = self.download_with_retries(&row.url).await?;
        let kind = ImageKind::sniff(&bytes.body).ok_or_else(|| FetchError::NotAnImage {
            url: row.url.clone(),
            content_type: bytes.content_type.clone(),
            magic: ImageKind::describe_magic(&bytes.body),
        })?;
        let storage = self.storage.clone();
        let (source, id) = (row.source.clone(), row.id.clone());
        let file = blocking(move || {
            let path = StoragePath::new(&source, &id, kind.extension())?;
            storage.write_atomic(&path, &bytes.body)?;
            Ok(StoredFile {
                path: path.to_string(),
                size: bytes.body.len() as u64,
                sha256: sha256_hex(&bytes.body),
                content_type: kind.content_type().to_owned(),
            })
        })
        .await
        .map_err(|source| FetchError::Store {
            url: row.url.clone(),
            source,
        })?;
        Ok((FetchOutcome::Downloaded, file))
    }

    async fn download_with_retries(&self, url: &str) -> Result<Body, FetchError> {
        let mut pause = Duration::from_millis(self.settings.retry_backoff_ms);
        let mut attempt = 1;
        loop {
            match self.download(url).await {
                Err(e) if e.is_retryable() && attempt < self.settings.attempts => {
                    log::info!(
                        "{e}; try {attempt} of {}, again in {pause:?}",
                        self.settings.attempts
                    );
                    actix_rt::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn download(&self, url: &str) -> Result<Body, FetchError> {
        let uri: awc::http::Uri = url.parse().map_err(|e| FetchError::InvalidUrl {
            url: url.to_owned(),
            reason: format!("{e}"),
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(FetchError::InvalidUrl {
                url: url.to_owned(),
                reason: "only http:// and https:// URLs with a host are fetched".into(),
            });
        }
        let total = Duration::from_millis(self.settings.request_timeout_ms);
        let limit = self.settings.max_image_bytes;
        let request = async {
            let mut response = self.client.get(uri).send().await.map_err(|e| match e {
                awc::error::SendRequestError::Timeout => FetchError::Timeout(url.to_owned()),
                awc::error::SendRequestError::Url(e) => FetchError::InvalidUrl {
                    url: url.to_owned(),
                    reason: e.to_string(),
                },
                other => FetchError::Connect {
                    url: url.to_owned(),
                    reason: other.to_string(),
                },
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    url: url.to_owned(),
                });
            }
            let content_type = response
                .headers()
                .get(awc::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let body = response.body().limit(limit).await.map_err(|e| match e {
                awc::error::PayloadError::Overflow => FetchError::TooLarge {
                    url: url.to_owned(),
                    limit,
                },
                other => FetchError::Body {
                    url: url.to_owned(),
                    reason: other.to_string(),
                },
            })?;
            Ok(Body {
                content_type,
                body: body.to_vec(),
            })
        };
        actix_rt::time::timeout(total, request)
            .await
            .map_err(|_| FetchError::Timeout(url.to_owned()))?
    }
}

struct Body {
    content_type: String,
    body: Vec<u8>,
}

/// Describes the file an earlier run stored for `id`, if any.
fn existing_file(
    storage: &Storage,
    source: &str,
    id: &ImageId,
) -> Result<Option<StoredFile>, StoreError> {
    let Some(path) = storage.find(source, id)? else {
        return Ok(None);
    };
    let bytes = storage.read(&path)?;
    // A file that is not an image (truncated by hand, say) is downloaded again.
    let Some(kind) = ImageKind::sniff(&bytes) else {
        return Ok(None);
    };
    Ok(Some(StoredFile {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        content_type: kind.content_type().to_owned(),
    }))
}

/// Runs file work on the blocking pool; a panic there comes back as an error.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    actix_rt::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::io(
            "storage task failed",
            "",
            std::io::Error::other(e.to_string()),
        ))
    })
}
