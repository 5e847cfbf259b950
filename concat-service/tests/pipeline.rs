//! End to end on the real Kafka and PostgreSQL: dls downloads from a real
//! HTTP server, cs persists and merges; the merged files are checked pixel by
//! pixel against the colours the sources were drawn with.

mod common;

use std::time::Duration;

use common::images::{Format, Sample};
use common::{
    assert_all_committed, check_outputs, never_stop, pair, publish_pairs, Pair, TestEnv, SOURCES,
};
use concat_service::startup::Application;
use download_service::startup::Downloader;
use shared::messages::SimulateFailure;

#[actix_rt::test]
async fn every_pair_is_merged_side_by_side_and_every_failure_is_recorded() {
    let env = TestEnv::new(&SOURCES);
    let jpg = Format::Jpeg;
    let mut pairs = vec![
        pair(
            "1",
            Sample::new(120, 80, 1, jpg),
            Sample::new(100, 80, 2, jpg),
            (220, 80),
            "jpg",
        ),
        // The taller part is scaled down to the shorter one's height: 200x100 -> 100x50.
        pair(
            "2",
            Sample::new(200, 100, 3, jpg),
            Sample::new(150, 50, 4, jpg),
            (250, 50),
            "jpg",
        ),
        // A PNG part makes a PNG output; 160x120 -> 80x60.
        pair(
            "3",
            Sample::new(160, 120, 5, Format::Png),
            Sample::new(90, 60, 6, jpg),
            (170, 60),
            "png",
        ),
        // Transparency comes out white.
        pair(
            "4",
            Sample::new(100, 100, 7, Format::PngTransparentCorner),
            Sample::new(60, 100, 0, Format::Png),
            (160, 100),
            "png",
        ),
    ];
    for i in 5..=10 {
        pairs.push(pair(
            &i.to_string(),
            Sample::new(64, 48, i, jpg),
            Sample::new(48, 48, i + 1, jpg),
            (112, 48),
            "jpg",
        ));
    }
    let good = Sample::new(32, 32, 1, jpg).encode();
    let html = env
        .server
        .serve("/html", 200, "text/html", b"<html>oops</html>".to_vec());
    let ok_left = env
        .server
        .serve("/ok-left.jpg", 200, "image/jpeg", good.clone());
    let ok_right = env.server.serve("/ok-right.jpg", 200, "image/jpeg", good);
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xE0];
    corrupt.extend_from_slice(&[7; 64]);
    let corrupt = env.server.serve("/corrupt.jpg", 200, "image/jpeg", corrupt);
    let missing = env.server.url("/nothing-here.jpg");
    publish_pairs(
        &env,
        &pairs,
        &[
            ("super_heros", ("html".into(), html)),
            ("alter_egos", ("html".into(), ok_right.clone())),
            ("super_heros", ("gone".into(), ok_left.clone())),
            ("alter_egos", ("gone".into(), missing)),
            ("super_heros", ("corrupt".into(), corrupt)),
            ("alter_egos", ("corrupt".into(), ok_right)),
            ("super_heros", ("../escape".into(), ok_left)),
        ],
    );

    let app = Application::start(env.settings.clone())
        .await
        .expect("cs starts");
    let summary = download_service::startup::run(env.settings.clone(), &[], never_stop())
        .await
        .expect("dls runs");
    let heroes = &summary.sources[0];
    assert_eq!(
        (heroes.source.as_str(), heroes.rows, heroes.published),
        ("super_heros", 14, 13)
    );
    assert_eq!(
        heroes.failed, 2,
        "the HTML page and the bad id: {:?}",
        heroes.reasons
    );
    assert!(
        heroes.reasons.iter().any(|r| r.contains("is not an image")),
        "{:?}",
        heroes.reasons
    );
    assert!(
        heroes
            .reasons
            .iter()
            .any(|r| r.contains("row 14: id \"../escape\" has the character '/'")),
        "{:?}",
        heroes.reasons
    );
    let egos = &summary.sources[1];
    assert_eq!(
        (egos.rows, egos.published, egos.failed),
        (13, 13, 1),
        "{:?}",
        egos.reasons
    );
    assert!(
        egos.reasons.iter().any(|r| r.contains("HTTP 404")),
        "{:?}",
        egos.reasons
    );

    let total = pairs.len() as i64 + 3;
    env.wait_for("every id merged or failed", Duration::from_secs(60), |e| {
        e.count("merged") + e.count("failed") == total
    })
    .await;
    assert_eq!(env.count("merged"), pairs.len() as i64);
    check_outputs(&env, &pairs);

    let error = |id: &str| {
        env.image_row(id)
            .and_then(|(s, _, e)| (s == "failed").then_some(e).flatten())
    };
    assert!(
        error("html").is_some_and(|e| e.contains("super_heros:") && e.contains("is not an image")),
        "{:?}",
        error("html")
    );
    assert!(
        error("gone").is_some_and(|e| e.contains("alter_egos: HTTP 404")),
        "{:?}",
        error("gone")
    );
    assert!(
        error("corrupt").is_some_and(|e| e.contains("super_heros/corrupt.jpg cannot be decoded")),
        "{:?}",
        error("corrupt")
    );
    assert_eq!(
        env.image_row("../escape"),
        None,
        "a bad id never reaches the table"
    );

    app.stop().await;
    assert_all_committed(&env);
}

#[actix_rt::test]
async fn actors_that_fail_mid_stream_are_restarted_and_every_id_still_merges_once() {
    let mut env = TestEnv::new(&SOURCES);
    // A claim lost with a failing actor would come back after its lease.
    env.settings.merge.lease_ms = 3_000;
    let pairs: Vec<Pair> = (1..=60)
        .map(|i| {
            pair(
                &format!("p{i}"),
                Sample::new(40, 40, i, Format::Jpeg),
                Sample::new(40, 40, i + 3, Format::Jpeg),
                (80, 40),
                "jpg",
            )
        })
        .collect();
    publish_pairs(&env, &pairs, &[]);
    let app = Application::start(env.settings.clone())
        .await
        .expect("cs starts");
    // dls's actors fail too, while rows are in flight (downloads are slowed
    // down so that they are).
    env.server.set_delay(Duration::from_millis(40));
    let downloader = Downloader::start(&env.settings, &[])
        .await
        .expect("dls starts");
    let (fetchers, producer) = (downloader.fetchers.clone(), downloader.producer.clone());
    let dls = actix_rt::spawn(async move { downloader.run(never_stop()).await });
    for failure in [SimulateFailure::Stop, SimulateFailure::Panic] {
        actix_rt::time::sleep(Duration::from_millis(150)).await;
        fetchers[0].do_send(failure);
        fetchers[1].do_send(failure);
        producer.do_send(failure);
    }

    env.wait_for("a first merge", Duration::from_secs(60), |e| {
        e.count("merged") >= 1
    })
    .await;
    for failure in [
        SimulateFailure::Stop,
        SimulateFailure::Panic,
        SimulateFailure::Stop,
    ] {
        app.consumer.do_send(failure);
        app.combiner.do_send(failure);
        app.db.do_send(failure);
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    let summary = dls.await.expect("dls task");
    assert!(
        summary
            .sources
            .iter()
            .all(|s| s.published == 60 && s.failed == 0 && s.unpublished == 0),
        "{summary}"
    );

    env.wait_for("all 60 merged", Duration::from_secs(90), |e| {
        e.count("merged") == 60
    })
    .await;
    assert_eq!(env.count("failed"), 0);
    check_outputs(&env, &pairs);
    let files = std::fs::read_dir(env.settings.storage.root.join("concat"))
        .expect("concat folder")
        .count();
    assert_eq!(files, 60, "one output per id, no stray temporary file");
    app.stop().await;
    assert_all_committed(&env);
}
