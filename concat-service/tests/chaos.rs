//! The chaos test: dls and two cs run as real processes (one consumer group)
//! while they are killed with SIGKILL at random moments, the broker is stopped
//! and started again, and so is PostgreSQL. Then, from the outside: every id
//! has exactly one merged output whose pixels match its parts, the table agrees
//! with the files, no temporary file remains, no message is left unconsumed,
//! a SIGTERM stops dls with exit code 0 mid-run, and the final SIGTERM/SIGINT
//! stops each cs with exit code 0.
//!
//! Knobs (environment): CHAOS_PAIRS (default 300), CHAOS_SEED (default: from
//! the clock; printed, so a failure can be replayed), CHAOS_OUTAGE_S (how long
//! the broker and PostgreSQL stay down, default 8), CHAOS_KILLS_DLS (3),
//! CHAOS_KILLS_CS (4). `make chaos` runs it with 2000 pairs and 30 s outages.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::images::{Format, Sample};
use common::{
    assert_all_committed, check_outputs, pair, publish_pairs, uncommitted, Pair, TestEnv, SOURCES,
};

/// Every image response waits this long (a slow origin), so that kills land
/// while dls is downloading.
const HTTP_DELAY_MS: u64 = 20;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a small seeded generator, so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (ms).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// A service process; killed on drop so a failing test leaves nothing behind.
struct Service {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    started_at: Option<Instant>,
    starts: u32,
}

impl Service {
    fn new(name: &str, bin: &Path, args: &[&str], envs: &[(String, String)], dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            bin: bin.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs.to_vec(),
            log: dir.join(format!("{name}.log")),
            child: None,
            started_at: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening a service log");
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.started_at = Some(Instant::now());
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Exit status if it has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `signal` (TERM, INT), then the exit status (None if it outlives `grace`).
    fn terminate(&mut self, signal: &str, grace: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops or starts one service run by `scripts/infra.sh`; false when that
/// service is not managed by the script (external servers are not restarted).
fn infra(action: &str, service: &str) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/infra.sh");
    let status = Command::new("bash")
        .arg(script)
        .args([action, service])
        .status()
        .expect("running scripts/infra.sh");
    status.success()
}

/// Stops `service`, waits `outage`, starts it again; false (and nothing
/// done) when the service is not one `scripts/infra.sh` runs.
fn outage_of(service: &str, outage: Duration) -> bool {
    if !infra("stop", service) {
        println!("chaos: {service} is not managed by scripts/infra.sh; not restarted");
        return false;
    }
    std::thread::sleep(outage);
    assert!(infra("start", service), "{service} did not come back");
    true
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().ends_with(".tmp") {
                found.push(f.path());
            }
        }
    }
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillDls,
    /// SIGTERM to dls: it must stop taking rows and exit 0 promptly.
    TermDls,
    KillCs,
    RestartBroker,
    RestartPostgres,
}

#[test]
fn nothing_is_lost_or_merged_twice_under_kills_and_outages() {
    let pairs_n: u32 = knob("CHAOS_PAIRS", 300);
    let seed: u64 = knob(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 | 1),
    );
    let outage = Duration::from_secs(knob("CHAOS_OUTAGE_S", 8));
    let kills_dls: u32 = knob("CHAOS_KILLS_DLS", 3);
    let kills_cs: u32 = knob("CHAOS_KILLS_CS", 4);
    println!(
        "chaos: pairs={pairs_n} seed={seed} outage={outage:?} (replay with CHAOS_SEED={seed})"
    );
    let mut rng = Rng(seed);

    let mut env = TestEnv::new(&SOURCES);
    let s = &mut env.settings;
    s.merge.lease_ms = 4_000;
    s.merge.sweep_interval_ms = 300;
    s.storage.stale_temp_ms = 2_000;
    s.consumer.session_timeout_ms = 6_000;
    s.consumer.shutdown_grace_ms = 10_000;
    s.kafka.message_timeout_ms = 300_000;
    s.download.fetchers = 4;
    s.download.attempts = 5;
    // Requests take a while, so that kills land while dls is downloading.
    env.server.set_delay(Duration::from_millis(HTTP_DELAY_MS));

    let pairs: Vec<Pair> = (1..=pairs_n)
        .map(|i| {
            let right_format = if i % 5 == 0 {
                Format::Png
            } else {
                Format::Jpeg
            };
            let h = 32 + (i % 2) * 8;
            let left = Sample::new(48 + (i % 3) * 8, 40, i, Format::Jpeg);
            let right = Sample::new(40, h, i + 5, right_format);
            // The left part (40 high) is scaled to the right part's height.
            let left_w = (left.width * h + 20) / 40;
            let ext = if right_format == Format::Png {
                "png"
            } else {
                "jpg"
            };
            pair(&format!("c{i}"), left, right, (left_w + 40, h), ext)
        })
        .collect();
    publish_pairs(&env, &pairs, &[]);

    let config = env.dir.path().join("chaos.toml");
    std::fs::write(
        &config,
        toml::to_string(&env.settings).expect("settings as TOML"),
    )
    .expect("writing the config");
    let cs_bin = PathBuf::from(env!("CARGO_BIN_EXE_cs"));
    let dls_bin = cs_bin.with_file_name("dls");
    assert!(
        dls_bin.exists(),
        "{} is missing: run `cargo build --bins` first (make test does)",
        dls_bin.display()
    );
    let envs = vec![
        (
            "KAFKA_BROKERS".to_owned(),
            env.settings.kafka.brokers.clone(),
        ),
        ("DATABASE_URL".to_owned(), env.settings.database.url.clone()),
        (
            "RUST_LOG".to_owned(),
            "info,librdkafka=warn,rdkafka=warn".to_owned(),
        ),
    ];
    let cfg = config.to_string_lossy().into_owned();
    let dir = env.dir.path().to_owned();
    let mut cs = [
        Service::new("cs-a", &cs_bin, &["--config", &cfg, "run"], &envs, &dir),
        Service::new("cs-b", &cs_bin, &["--config", &cfg, "run"], &envs, &dir),
    ];
    let mut dls = Service::new("dls", &dls_bin, &["--config", &cfg], &envs, &dir);
    for c in cs.iter_mut() {
        c.start();
    }
    dls.start();

    // The faults, at random moments over the time the downloads take.
    let fetchers = env.settings.download.fetchers as u64;
    let window_ms = (u64::from(pairs_n) * 2 * HTTP_DELAY_MS / fetchers).max(3_000);
    let mut faults: Vec<(u64, Fault)> = Vec::new();
    faults.extend((0..kills_dls).map(|_| (rng.between(300, window_ms), Fault::KillDls)));
    faults.extend((0..kills_cs).map(|_| (rng.between(300, window_ms), Fault::KillCs)));
    faults.push((rng.between(300, window_ms), Fault::TermDls));
    faults.push((rng.between(1_000, window_ms), Fault::RestartBroker));
    faults.push((rng.between(1_000, window_ms), Fault::RestartPostgres));
    faults.sort_by_key(|f| f.0);
    println!("chaos: faults at {faults:?}");

    let started = Instant::now();
    let mut terms_dls = 0u32;
    let (mut done_dls, mut done_cs, mut broker_restarts, mut pg_restarts) =
        (0u32, 0u32, 0u32, 0u32);
    let mut dls_finished = false;
    let watch_dls = |dls: &mut Service, finished: &mut bool| {
        if let Some(status) = dls.exited() {
            assert!(
                status.success(),
                "dls failed ({status}):\n{}",
                dls.log_tail()
            );
            *finished = true;
        }
    };
    for (at, fault) in faults {
        while started.elapsed() < Duration::from_millis(at) {
            watch_dls(&mut dls, &mut dls_finished);
            std::thread::sleep(Duration::from_millis(20));
        }
        watch_dls(&mut dls, &mut dls_finished);
        match fault {
            Fault::KillDls => {
                if !dls.running() {
                    // It finished: start it again and kill it while it
                    // re-publishes (a resumed run).
                    dls.start();
                    std::thread::sleep(Duration::from_millis(rng.between(100, 1_500)));
                }
                dls.kill();
                done_dls += 1;
                dls_finished = false;
                dls.start();
            }
            Fault::TermDls => {
                if !dls.running() {
                    dls.start(); // it finished: stop a resumed run instead
                }
                // A signal in a process's first milliseconds, before it has
                // installed its handler, kills it the default way: give it time.
                if let Some(t) = dls.started_at {
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
                }
                watch_dls(&mut dls, &mut dls_finished);
                if dls.running() {
                    let status = dls.terminate("TERM", Duration::from_secs(15));
                    assert!(
                        status.is_some_and(|s| s.success()),
                        "dls on SIGTERM: {status:?}\n{}",
                        dls.log_tail()
                    );
                    terms_dls += 1;
                    dls_finished = false;
                    dls.start();
                }
            }
            Fault::KillCs => {
                let victim = &mut cs[(rng.next() % 2) as usize];
                victim.kill();
                done_cs += 1;
                victim.start();
            }
            Fault::RestartBroker => broker_restarts += u32::from(outage_of("kafka", outage)),
            Fault::RestartPostgres => pg_restarts += u32::from(outage_of("postgres", outage)),
        }
    }

    // One dls run must reach the end of the CSVs.
    let deadline = Instant::now() + Duration::from_secs(600);
    while !dls_finished {
        if !dls.running() && dls.child.is_none() {
            dls.start();
        }
        watch_dls(&mut dls, &mut dls_finished);
        assert!(
            Instant::now() < deadline,
            "dls did not finish:\n{}",
            dls.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Quiescence: every id decided, no claim open, no temporary file left.
    let total = i64::from(pairs_n);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for c in cs.iter_mut() {
            if let Some(status) = c.exited() {
                panic!("{} exited on its own ({status}):\n{}", c.name, c.log_tail());
            }
        }
        let counts = env.counts();
        let get = |s: &str| counts.iter().find(|(st, _)| st == s).map_or(0, |(_, n)| *n);
        // Re-delivered messages (a killed cs had not committed them) are
        // still consumed after the table is complete: wait for those too.
        let settled = get("merged") + get("failed") == total
            && get("merging") + get("ready") + get("pending") == 0
            && temp_files(&env.settings.storage.root).is_empty()
            && uncommitted(&env).is_empty();
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {counts:?}, temp files {:?}, uncommitted {:?}\n{}",
            temp_files(&env.settings.storage.root),
            uncommitted(&env),
            cs[0].log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM / SIGINT: each cs drains, commits and exits 0 within its grace period.
    for (c, signal) in cs.iter_mut().zip(["TERM", "INT"]) {
        let grace =
            Duration::from_millis(env.settings.consumer.shutdown_grace_ms) + Duration::from_secs(5);
        let status = c.terminate(signal, grace);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} on SIG{signal}: {status:?}\n{}",
            c.name,
            c.log_tail()
        );
    }

    // Resume: a restarted dls downloads only what was not stored yet, i.e. at
    // most the rows in flight when it was killed (one per Fetcher).
    let downloads = env.server.total_hits() as u64;
    let expected = u64::from(pairs_n) * 2;
    assert!(
        downloads >= expected && downloads <= expected + u64::from(done_dls) * fetchers,
        "{downloads} downloads for {expected} images and {done_dls} kills of dls"
    );

    let merged = env.count("merged");
    let failed = env.count("failed");
    let outputs = std::fs::read_dir(env.settings.storage.root.join("concat"))
        .map(|d| d.count() as i64)
        .unwrap_or(0);
    let lost = total - merged - failed;
    let duplicated = outputs - merged;
    println!(
        "pairs={pairs_n} seed={seed} kills_dls={done_dls} kills_cs={done_cs} broker_restarts={broker_restarts} \
         pg_restarts={pg_restarts} merged={merged} failed={failed} lost={lost} duplicated={duplicated} \
         sigterms_dls={terms_dls}"
    );
    assert_eq!(
        (lost, duplicated, failed),
        (0, 0, 0),
        "replay with CHAOS_SEED={seed}"
    );
    check_outputs(&env, &pairs);
    assert_all_committed(&env);
}
