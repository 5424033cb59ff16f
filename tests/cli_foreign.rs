//! `distlock status` and `distlock run` on a RavenDB key held by the original .NET
//! `RavenDbProcessMonitor` (its port, `testkit::ravendb::original`): the value is a
//! lock of a foreign holder, shown with its token and what distlock does with it.
//! (Here, not in `testkit/tests`, because only this package's tests can run its binary.)
//!
//! Run: `cargo test --features cli,ravendb --test cli_foreign` (needs
//! `scripts/ravendb.sh install`).
#![cfg(all(feature = "cli", feature = "ravendb"))]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use distlock::testing::unique_key as unique;
use testkit::ravendb::Server as RavenServer;
use testkit::ravendb::original::Original;

/// Runs the CLI to its end (bounded by the command's own wait options).
async fn distlock(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_distlock"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running distlock {args:?}: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_original_as_a_foreign_holder_taken_over_after_the_foreign_ttl() {
    let server = RavenServer::start().await;
    let key = unique("cli/foreign");
    let original = Original::new(&server);
    let index = original.enter(&key).await;
    let url = server.store_url();

    let out = distlock(vec![
        "status".into(),
        "--backend".into(),
        url.clone(),
        key.clone(),
    ])
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for needle in [
        format!("{key}: held by a foreign holder (a value distlock did not write)"),
        format!("token:   {index}"),
        "not a distlock record".to_owned(),
        "distlock waits for it and takes it over once it stayed unchanged (this token) for the \
         foreign ttl (foreign_ttl= in the URL, default 5m)"
            .to_owned(),
    ] {
        assert!(stdout.contains(&needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("fails while it is there"), "{stdout}");

    let out = distlock(vec![
        "status".into(),
        "--json".into(),
        "--backend".into(),
        url.clone(),
        key.clone(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(json["foreign"], true, "{json}");
    assert_eq!(json["owner"], serde_json::Value::Null, "{json}");
    assert_eq!(json["token"], index, "{json}");

    // `run` waits on it (no error) and runs its command once the original exits.
    let runner = {
        let url = url.clone();
        let key = key.clone();
        tokio::spawn(distlock(vec![
            "run".into(),
            "--backend".into(),
            url,
            "--key".into(),
            key,
            "--wait".into(),
            "60s".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "echo RAN $DISTLOCK_TOKEN".into(),
        ]))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!runner.is_finished(), "`run` did not wait for the original");
    assert!(original.exit(&key, index).await);
    let out = runner.await.unwrap_or_else(|e| panic!("{e}"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let token: u64 = stdout
        .split_once("RAN ")
        .and_then(|(_, rest)| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no token in {stdout:?}"));
    assert!(token > index, "{token} <= {index}");
}
