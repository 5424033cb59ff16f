//! The operator commands: `status`, `list`, `release --force` and `hold`.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use distlock::{ForceRelease, Holder, LockInfo};
use serde_json::{Value, json};

use crate::exit::{EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE, fail, for_error, shown};
use crate::signals::{self, Signals};
use crate::{HoldArgs, ListArgs, ReleaseArgs, StatusArgs, backend, waiting};

/// Who holds a lock, in a few words (the spinner, `status`).
pub fn holder_text(info: &LockInfo) -> String {
    match &info.holder {
        Holder::Distlock { owner, .. } => shown(owner),
        Holder::Foreign { .. } => "a foreign holder (a value distlock did not write)".to_owned(),
        _ => "an unknown holder".to_owned(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, millis)
}

/// A lock as JSON (the fields `status --json` documents).
fn info_json(info: &LockInfo) -> Value {
    let mut value = json!({
        "key": info.key,
        "state": "held",
        "token": info.token,
        "lease": info.lease.map(|lease| lease.0),
        "lease_remaining_ms": info.lease_remaining.map(millis),
    });
    match &info.holder {
        Holder::Distlock {
            owner,
            ttl,
            written_at,
        } => {
            value["owner"] = json!(owner);
            value["foreign"] = json!(false);
            value["ttl_ms"] = json!(millis(*ttl));
            value["written_at_ms"] = json!(unix_millis(*written_at));
            value["age_ms"] = json!(
                SystemTime::now()
                    .duration_since(*written_at)
                    .map_or(0, millis)
            );
        }
        Holder::Foreign { reason } => {
            value["owner"] = Value::Null;
            value["foreign"] = json!(true);
            value["foreign_reason"] = json!(reason);
        }
        _ => {}
    }
    value
}

fn free_json(key: &str) -> Value {
    json!({ "key": key, "state": "free" })
}

/// A lock as text, one field per line after the first; `backend` is the
/// store's backend name (what a foreign value means depends on it).
fn info_text(info: &LockInfo, backend: &str) -> String {
    let mut text = format!(
        "{}: held by {}\n  token:   {}",
        shown(&info.key),
        holder_text(info),
        info.token
    );
    match &info.holder {
        Holder::Distlock {
            ttl, written_at, ..
        } => {
            let ago = SystemTime::now()
                .duration_since(*written_at)
                .map_or(Duration::ZERO, |d| Duration::from_secs(d.as_secs()));
            // A record another tool wrote may carry any time: humantime cannot
            // show years past 9999 (its Display fails, and `format!` panics).
            let mut written = String::new();
            if write!(
                written,
                "{}",
                humantime::format_rfc3339_seconds(*written_at)
            )
            .is_err()
            {
                written = format!("{} ms after the Unix epoch", unix_millis(*written_at));
            }
            text += &format!(
                "\n  ttl:     {}\n  since:   {written} ({} ago, by the holder's clock)",
                humantime::format_duration(*ttl),
                humantime::format_duration(ago),
            );
        }
        Holder::Foreign { reason } => {
            let meaning = if backend == "ravendb" {
                // The RavenDB store reads it as a lock held by a foreign holder.
                "a lock held by a foreign holder (such as the original .NET \
                 RavenDbProcessMonitor); distlock waits for it and takes it over once it stayed \
                 unchanged (this token) for the foreign ttl (foreign_ttl= in the URL, default 5m)"
            } else {
                "another tool wrote it; acquiring this key fails while it is there"
            };
            text += &format!(
                "\n  value:   not a distlock record ({}): {meaning}",
                shown(reason)
            );
        }
        _ => {}
    }
    if let Some(lease) = info.lease {
        text += &format!("\n  lease:   {}", lease.0);
        if let Some(left) = info.lease_remaining {
            text += &format!(
                ", expires in {} unless renewed",
                humantime::format_duration(left)
            );
        }
        text += " (the server deletes the key when it expires)";
    }
    text
}

fn print_json(value: &Value) {
    outln!("{value}");
}

/// `distlock status KEY`.
pub async fn status(args: StatusArgs) -> u8 {
    let client = match backend::connect(&args.backend) {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.status(&args.key).await {
        Ok(Some(info)) if args.json => print_json(&info_json(&info)),
        Ok(Some(info)) => outln!("{}", info_text(&info, client.backend())),
        Ok(None) if args.json => print_json(&free_json(&args.key)),
        Ok(None) => outln!("{}: free", args.key),
        Err(error) => return fail(for_error(&error, EX_UNAVAILABLE), error),
    }
    0
}

/// `distlock list [PREFIX]`.
pub async fn list(args: ListArgs) -> u8 {
    let client = match backend::connect(&args.backend) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let locks = match client.list(&args.prefix).await {
        Ok(locks) => locks,
        Err(error) => return fail(for_error(&error, EX_UNAVAILABLE), error),
    };
    if args.json {
        print_json(&Value::Array(locks.iter().map(info_json).collect()));
    } else if locks.is_empty() {
        outln!("no lock held under {:?}", args.prefix);
    } else {
        for info in &locks {
            outln!("{}", info_text(info, client.backend()));
        }
    }
    0
}

/// `distlock release --force KEY [--token N]`.
pub async fn release(args: ReleaseArgs) -> u8 {
    if !args.force {
        return fail(
            EX_USAGE,
            "`release` frees a lock someone else holds: say --force (a holder releases its own \
             lock itself, when its command ends)",
        );
    }
    let client = match backend::connect(&args.backend) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let key = &args.key;
    let info = match client.status(key).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            if args.json {
                print_json(&json!({ "key": key, "released": false, "state": "free" }));
            } else {
                outln!("{key}: free already; nothing released");
            }
            return 0;
        }
        Err(error) => return fail(for_error(&error, EX_UNAVAILABLE), error),
    };
    if let Some(expected) = args.token
        && expected != info.token
    {
        if args.json {
            print_json(&json!({ "key": key, "released": false, "current": info_json(&info) }));
        }
        return fail(
            EX_TEMPFAIL,
            format!(
                "lock `{key}` has fencing token {}, not {expected}: not released (run `distlock \
                 status {key}` again)",
                info.token
            ),
        );
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return fail(
                EX_USAGE,
                format!(
                    "not releasing `{key}` without confirmation: stdin is not a terminal; add --yes"
                ),
            );
        }
        errln!("{}", info_text(&info, client.backend()));
        err!(
            "Force-release `{key}` (token {})? Its holder may still be running. [y/N] ",
            info.token
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err()
            || !matches!(answer.trim(), "y" | "Y" | "yes")
        {
            return fail(EX_TEMPFAIL, format!("`{key}` not released"));
        }
    }
    match client.force_release(key, info.token).await {
        Ok(ForceRelease::Released) => {
            if args.json {
                print_json(&json!({ "key": key, "released": true, "token": info.token }));
            } else {
                outln!(
                    "{key}: released (token {}); its holder, if alive, learns it lost the lock at once on etcd, at its next renewal (ttl/3) elsewhere",
                    info.token
                );
            }
            0
        }
        Ok(ForceRelease::Changed { current }) => {
            if args.json {
                print_json(&json!({
                    "key": key,
                    "released": false,
                    "current": current.as_ref().map_or_else(|| free_json(key), info_json),
                }));
            }
            fail(
                EX_TEMPFAIL,
                format!(
                    "lock `{key}` changed since it was read (token {} is gone): not released; run \
                     `distlock status {key}` again",
                    info.token
                ),
            )
        }
        Ok(_) => fail(EX_TEMPFAIL, format!("`{key}` not released")),
        Err(error) => fail(for_error(&error, EX_UNAVAILABLE), error),
    }
}

/// `distlock hold KEY`: holds until a signal.
pub async fn hold(args: HoldArgs) -> u8 {
    let mut signals = match Signals::catch() {
        Ok(signals) => signals,
        Err(error) => {
            return fail(
                crate::exit::EX_OSERR,
                format!("cannot catch signals: {error}"),
            );
        }
    };
    let client = match backend::connect(&args.backend) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let wait = &args.wait;
    let key = &args.key;
    let (options, if_locked) = waiting::options(wait);
    let guard =
        match waiting::acquire_or_exit(&client, key, (&options, if_locked), wait, &mut signals)
            .await
        {
            Ok(guard) => guard,
            Err(code) => return code,
        };
    if args.json {
        print_json(&json!({ "key": key, "token": guard.token() }));
    } else {
        outln!("{key} token {}", guard.token());
    }
    let _ = std::io::stdout().flush();
    tokio::select! {
        signal = signals.next() => {
            match guard.release().await {
                Ok(()) => {
                    if wait.verbose {
                        errln!("distlock: {}: released `{key}`", signals::name(signal));
                    }
                    0
                }
                Err(error) => fail(for_error(&error, EX_UNAVAILABLE), error),
            }
        }
        reason = guard.lost() => {
            let error = distlock::LockError::Lost { key: key.clone(), token: guard.token(), reason };
            drop(guard);
            client.wait_idle(waiting::SETTLE).await;
            fail(crate::exit::EX_SOFTWARE, error)
        }
    }
}
