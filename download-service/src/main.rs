//! `dls`: parses the command line, loads the settings and runs the service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shared::config::Settings;

/// Download Service: downloads the images listed in each source's CSV, stores
/// them under the storage root and publishes one message per row to Kafka.
#[derive(Debug, Parser)]
#[command(name = "dls", version)]
struct Cli {
    /// TOML configuration file (default: ./two-micros.toml when present).
    #[arg(long, env = "TWO_MICROS_CONFIG")]
    config: Option<PathBuf>,
    /// Run only this source (repeat for several); all configured ones by default.
    /// Lets several dls processes share the work, e.g. one per source.
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Number of Fetcher actors (downloads in flight).
    #[arg(long)]
    fetchers: Option<usize>,
    /// Storage root (overrides storage.root and STORAGE_ROOT).
    #[arg(long)]
    storage_root: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(n) = cli.fetchers {
        settings.download.fetchers = n;
    }
    if let Some(root) = cli.storage_root {
        settings.storage.root = root;
    }
    settings.validate()?;

    let system = actix::System::new();
    let summary = system.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        actix_rt::spawn(async move {
            shared::shutdown::signal().await;
            log::info!("stopping: no new rows are taken, rows in flight finish");
            let _ = stop_tx.send(true);
        });
        download_service::startup::run(settings, &cli.sources, stop_rx).await
    })?;
    println!("{summary}");
    Ok(if summary.could_not_run() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
