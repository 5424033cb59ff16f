//! A lock holder that is a real process, the `distlock run` CLI, SIGKILLed while it holds
//! the lock: its lock is taken over after its ttl, not before, on etcd and on RavenDB.
//! (Here, not in `testkit/tests`, because only this package's tests can run its binary.)
//!
//! Run: `cargo test --features cli,etcd,ravendb --test crashed_holder` (needs
//! `scripts/etcd.sh` and `scripts/ravendb.sh install`; each backend's test needs its
//! feature).
#![cfg(all(feature = "cli", any(feature = "etcd", feature = "ravendb")))]

#[cfg(feature = "etcd")]
mod etcd {
    use std::time::{Duration, Instant};

    use distlock::store::etcd::EtcdStore;
    use distlock::testing::unique_key;
    use distlock::{LockClient, LockOptions};
    use testkit::etcd::Cluster as EtcdCluster;
    use testkit::process::{KillOnDrop, KillPidOnDrop};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_holder_process_frees_the_lock_after_the_lease_ttl_not_before() {
        use std::io::BufRead;

        let etcd = EtcdCluster::single();
        let url = format!("etcd://127.0.0.1:{}/crash", etcd.client_port(0));
        let key = unique_key("crash/holder");
        let ttl = Duration::from_secs(2);
        // The holder is a real process: the `distlock run` CLI holding the lock
        // while its command sleeps (exec, so the command keeps the shell's PID).
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_distlock"))
            .args(["run", "--backend", &url, "--key", &key, "--ttl", "2s", "--"])
            .args(["sh", "-c", "echo HELD $DISTLOCK_TOKEN $$; exec sleep 60"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the holder process: {e}"));
        let mut child = KillOnDrop(child);
        let stdout = child
            .0
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout pipe"));
        // The line appears within a second; a reader thread keeps this bounded.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness may print its "test ... " prefix on the same line.
                if let Some((_, rest)) = line.split_once("HELD ") {
                    let mut words = rest.split_whitespace();
                    let token = words.next().and_then(|t| t.parse::<u64>().ok());
                    let command_pid = words.next().and_then(|p| p.parse::<u32>().ok());
                    let _ = tx.send(token.zip(command_pid));
                    break;
                }
            }
        });
        let (token, command_pid) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the holder process did not report holding the lock"))
            .unwrap_or_else(|| panic!("the holder process printed no token"));
        // Its command outlives a SIGKILLed `distlock`: stop it by PID too.
        let _command = KillPidOnDrop(command_pid);
        // Kill it right after it acquired: its lease was granted just before, and nothing
        // renews it any more.
        let killed_at = Instant::now();
        let _ = child.0.kill();
        let _ = child.0.wait();

        let store = EtcdStore::from_url(&url).unwrap_or_else(|e| panic!("{e}"));
        let client = LockClient::builder(store)
            .defaults(LockOptions::default().ttl(ttl))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut taken = None;
        while killed_at.elapsed() < ttl * 5 {
            match client.try_acquire(&key).await {
                Ok(Some(guard)) => {
                    taken = Some((killed_at.elapsed(), guard.token()));
                    guard.release().await.unwrap_or_else(|e| panic!("{e}"));
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("try_acquire: {e}"),
            }
        }
        let (after, new_token) =
            taken.unwrap_or_else(|| panic!("the killed holder's lock was not freed within 5 ttl"));
        println!(
            "etcd: a SIGKILLed holder's lock (ttl {ttl:?}) was taken {after:?} after the kill"
        );
        assert!(
            new_token > token,
            "tokens must grow ({token} then {new_token})"
        );
        // The lease was granted before the child printed; allow that much slack.
        assert!(
            after >= ttl - Duration::from_millis(100),
            "taken {after:?} after the kill, before the ttl of {ttl:?}"
        );
        assert!(
            after < ttl + Duration::from_secs(2),
            "freed only after {after:?}"
        );
    }
}

#[cfg(feature = "ravendb")]
mod ravendb {
    use std::time::{Duration, Instant};

    use distlock::store::CompareExchange;
    use distlock::store::ravendb::RavenDbStore;
    use distlock::testing::unique_key as unique;
    use distlock::{LockClient, LockError, LockOptions, Wait};
    use testkit::process::KillPidOnDrop;
    use testkit::ravendb::Server as RavenServer;

    fn store(server: &RavenServer) -> RavenDbStore {
        RavenDbStore::from_url(&server.store_url()).unwrap_or_else(|e| panic!("store: {e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crashed_holder_is_taken_over_after_ttl_not_before() {
        use std::io::BufRead;
        let server = RavenServer::start().await;
        let key = unique("ravendb/crash");
        let ttl = Duration::from_secs(2);
        // The holder is a real process: the `distlock run` CLI holding the lock
        // while its command sleeps (exec, so the command keeps the shell's PID).
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_distlock"))
            .args([
                "run",
                "--backend",
                &server.store_url(),
                "--key",
                &key,
                "--ttl",
                "2s",
                "--",
            ])
            .args([
                "sh",
                "-c",
                "echo ACQUIRED $DISTLOCK_TOKEN $$; exec sleep 120",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the holder process: {e}"));
        let _guard = KillPidOnDrop(child.id());
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let token = tokio::task::spawn_blocking(move || {
            for line in std::io::BufReader::new(stdout).lines().take(100) {
                let line = line.ok()?;
                // The test harness prints "test holder_child_process ... " first, same line.
                if let Some((_, rest)) = line.split_once("ACQUIRED ") {
                    let mut words = rest.split_whitespace();
                    let token = words.next().and_then(|t| t.parse::<u64>().ok());
                    let command_pid = words.next().and_then(|p| p.parse::<u32>().ok());
                    return token.zip(command_pid);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the holder process never acquired the lock"));
        let (token, command_pid) = token;
        // Its command outlives a SIGKILLed `distlock`: stop it by PID too.
        let _command = KillPidOnDrop(command_pid);

        // An independent watcher records when each index first appeared: the holder's
        // lease runs ttl from its last renewal, whatever the kill time.
        let watcher_store = store(&server);
        let watch_key = key.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let history = tokio::spawn(async move {
            // (index, the send time of the last read that still showed the previous
            // index): each change happened after that read was sent.
            let mut history: Vec<(u64, Option<Instant>)> = Vec::new();
            let mut previous_read = None;
            let limit = Instant::now() + Duration::from_secs(30);
            while Instant::now() < limit && stop_rx.try_recv().is_err() {
                let sent = Instant::now();
                if let Ok(Some(entry)) = watcher_store.get(&watch_key).await {
                    if history.last().is_none_or(|(i, _)| *i != entry.index) {
                        history.push((entry.index, previous_read));
                    }
                    previous_read = Some(sent);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            history
        });
        let store = RavenDbStore::from_url(&server.store_url()).unwrap_or_else(|e| panic!("{e}"));
        let client = LockClient::builder(store)
            .defaults(LockOptions::default().ttl(ttl))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        // While the holder lives (and renews), nobody gets the lock, for well past its ttl.
        let busy = client
            .acquire_with(
                &key,
                &LockOptions::default().ttl(ttl).wait(Wait::For(ttl * 2)),
            )
            .await;
        assert!(
            matches!(busy, Err(LockError::Timeout { .. })),
            "a live holder's lock was taken: {busy:?}"
        );

        child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        let _ = child.wait();
        let killed_at = Instant::now();
        let guard = client
            .acquire_with(
                &key,
                &LockOptions::default().ttl(ttl).wait(Wait::For(ttl * 5)),
            )
            .await
            .unwrap_or_else(|e| panic!("the crashed holder's lock was never taken over: {e}"));
        let taken_at = Instant::now();
        let after = taken_at - killed_at;
        let _ = stop_tx.send(());
        let history = history.await.unwrap_or_else(|e| panic!("{e}"));
        let last_renewal = history
            .iter()
            .rev()
            .find(|(index, _)| *index < guard.token())
            .and_then(|(_, seen)| *seen)
            .unwrap_or_else(|| panic!("the watcher never saw the holder renew: {history:?}"));
        let since_renewal = taken_at - last_renewal;
        if std::env::var_os("DISTLOCK_TEST_DEBUG").is_some() {
            for (index, seen) in &history {
                let at = match seen {
                    None => "(first sighting)".to_owned(),
                    Some(seen) if *seen >= killed_at => format!("+{:?}", *seen - killed_at),
                    Some(seen) => format!("-{:?}", killed_at - *seen),
                };
                eprintln!("  index {index} appeared after {at} (relative to the kill)");
            }
            eprintln!("  taken at +{after:?}");
        }
        eprintln!(
            "ravendb: crashed holder's lock (ttl {ttl:?}) taken over {after:?} after SIGKILL, \
             {since_renewal:?} after its last renewal (token {token} -> {})",
            guard.token()
        );
        assert!(
            since_renewal >= ttl,
            "taken over {since_renewal:?} after the holder's last renewal, before the ttl {ttl:?}"
        );
        assert!(after < ttl * 3, "taken over only {after:?} after the kill");
        assert!(guard.token() > token);
        guard.release().await.unwrap_or_else(|e| panic!("{e}"));
    }
}
