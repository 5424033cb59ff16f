//! Property tests of the RavenDB answer decoders: [`decode_record`],
//! [`decode_item`] / [`decode_held_or_none`] (a compare-exchange value),
//! `Inner::write_answer` and `Inner::error_answer` (a PUT answer and an
//! error answer), and, through a fake node on a loopback port, the GET answer
//! decoding in `Inner::read` behind `get`, `put` and `delete`. Any answer:
//! never a panic, a typed [`StoreError`]; what this backend writes decodes
//! back to the same record.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::mapping::{self, FOREIGN_HOLDER, Item, decode_held_or_none, decode_item, decode_record};
use super::transport::Answer;
use super::{RavenDbError, RavenDbStore};
use crate::store::{CompareExchange, DeleteOutcome, Entry, Expect, PutOutcome, Record, StoreError};

use crate::store::proptest_support as support;

/// What `put` stores under `Object` for a first write of `record`, as JSON.
fn encode_record(record: &Record) -> Value {
    encode_write(record, record.written_at_ms)
}

/// What a write of `record` at the wall clock `wall_ms` stores under `Object`.
fn encode_write(record: &Record, wall_ms: u64) -> Value {
    serde_json::to_value(mapping::encode_record(record, wall_ms)).unwrap_or(Value::Null)
}

/// Checks that `text` is a date as .NET's round-trip format writes a UTC
/// `DateTime` (`yyyy-MM-ddTHH:mm:ss.fffffffZ`, year 0001-9999, a real
/// calendar date) and returns it in Unix ms.
fn dotnet_date_ms(text: &str) -> Result<u64, TestCaseError> {
    let bytes = text.as_bytes();
    prop_assert_eq!(bytes.len(), 28, "{}", text);
    for (at, byte) in bytes.iter().enumerate() {
        let expected = match at {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            27 => Some(b'Z'),
            _ => None,
        };
        match expected {
            Some(separator) => prop_assert_eq!(*byte, separator, "{}", text),
            None => prop_assert!(byte.is_ascii_digit(), "{}", text),
        }
    }
    let field = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(u32::MAX);
    let (year, month, day) = (field(0..4), field(5..7), field(8..10));
    let (hour, minute, second) = (field(11..13), field(14..16), field(17..19));
    prop_assert!((1..=9999).contains(&year), "{}", text);
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    prop_assert!((1..=days).contains(&day), "{}", text);
    prop_assert!(hour < 24 && minute < 60 && second < 60, "{}", text);
    let parsed =
        humantime::parse_rfc3339(text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    let since = parsed
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Statuses a RavenDB node or a proxy in front of it may answer with.
fn status() -> impl Strategy<Value = StatusCode> {
    prop::sample::select(vec![
        200u16, 200, 200, 201, 400, 401, 403, 404, 404, 409, 412, 500, 502, 503, 504,
    ])
    .prop_map(|code| StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT))
}

/// `encode_record` as stored under `Object`, sometimes with a damaged field.
fn object() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => support::record().prop_map(|r| encode_record(&r)),
        1 => (support::record(), prop::sample::select(vec!["owner", "nonce", "ttl_ms", "written_at_ms", "ExpiresAt"]), support::json())
            .prop_map(|(r, field, junk)| {
                let mut object = encode_record(&r);
                object[field] = junk;
                object
            }),
        // As earlier versions wrote it: no `ExpiresAt`.
        1 => support::record().prop_map(|r| {
            let mut object = encode_record(&r);
            if let Some(fields) = object.as_object_mut() {
                fields.remove("ExpiresAt");
            }
            object
        }),
        1 => support::json(),
        1 => Just(json!({"released": true, "previous_index": 3})),
    ]
}

/// A compare-exchange `Value`: `{"Object": ..}` or anything else.
fn item_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => object().prop_map(|o| json!({ "Object": o })),
        1 => support::json(),
        1 => Just(Value::Null),
    ]
}

/// Bodies of answers: well-formed ones, damaged ones, garbage.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let get = (
        prop_oneof![3 => any::<u64>().prop_map(Value::from), 1 => support::json()],
        item_value(),
    )
        .prop_map(|(index, value)| json!({"Results": [{"Index": index, "Value": value}]}));
    let put = (support::json(), any::<u64>(), item_value()).prop_map(|(ok, index, value)| {
        json!({"Successful": if ok.is_boolean() { ok } else { Value::Bool(index % 2 == 0) }, "Index": index, "Value": value})
    });
    let error = (".{0,12}", ".{0,12}").prop_map(|(t, m)| json!({"Type": t, "Message": m}));
    let well_formed = prop_oneof![get, put, error, support::json()];
    prop_oneof![
        4 => well_formed.clone().prop_map(|v| v.to_string().into_bytes()),
        2 => (well_formed, support::byte_edits())
            .prop_map(|(v, edits)| support::edit(v.to_string().into_bytes(), &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

fn store(url: &str) -> RavenDbStore {
    RavenDbStore::builder()
        .url(url)
        .database("locks")
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A typed error of this backend: `Foreign` for values, `Backend` /
/// `Unavailable` carrying a [`RavenDbError`] for answers.
fn check_error(error: &StoreError) -> Result<(), TestCaseError> {
    match error {
        StoreError::Foreign { reason } => prop_assert!(!reason.is_empty()),
        StoreError::Backend { source, .. } | StoreError::Unavailable { source, .. } => {
            prop_assert!(
                source.downcast_ref::<RavenDbError>().is_some(),
                "untyped source: {:?}",
                source
            );
        }
        other => prop_assert!(false, "unexpected error {:?}", other),
    }
    Ok(())
}

fn record_of(object: &Value) -> Option<Record> {
    let owner = object.get("owner")?.as_str()?;
    let nonce = match object.get("nonce")? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    Some(Record {
        owner: owner.into(),
        nonce,
        ttl_ms: object.get("ttl_ms")?.as_u64()?,
        written_at_ms: object.get("written_at_ms")?.as_u64()?,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any object: the record its fields describe, or `Foreign`.
    #[test]
    fn objects_decode_or_are_foreign(object in object()) {
        match decode_record(&object) {
            Ok(record) => prop_assert_eq!(Some(record), record_of(&object)),
            Err(error @ StoreError::Foreign { .. }) => {
                prop_assert!(record_of(&object).is_none(), "{:?} refused: {}", object, error);
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }

    /// What `put` stores decodes back to the same record.
    #[test]
    fn written_records_round_trip(record in support::record(), index in any::<u64>()) {
        prop_assert_eq!(decode_record(&encode_record(&record)).ok(), Some(record.clone()));
        let value = json!({ "Object": encode_record(&record) });
        match decode_item(&value, index) {
            Ok(Item::Lock(entry)) => {
                prop_assert_eq!(entry, Entry { record, index, lease: None });
            }
            Ok(Item::Tombstone { .. }) => prop_assert!(false, "a record read as a tombstone"),
            Err(error) => prop_assert!(false, "{}", error),
        }
    }

    /// Any record written at any wall clock (huge values too): `ExpiresAt`
    /// is a date .NET parses, the later of `written_at_ms` and the wall
    /// clock plus the ttl, saturated and clamped to .NET's last date; the
    /// record still decodes to itself.
    #[test]
    fn expires_at_is_always_a_dotnet_date(
        record in support::record(),
        written_at_ms in prop_oneof![any::<u64>(), 0u64..4_102_444_800_000, Just(u64::MAX)],
        ttl_ms in prop_oneof![any::<u64>(), 0u64..86_400_000, Just(u64::MAX)],
        wall_ms in prop_oneof![any::<u64>(), 0u64..4_102_444_800_000, Just(u64::MAX)],
    ) {
        let record = Record { ttl_ms, written_at_ms, ..record };
        let object = encode_write(&record, wall_ms);
        let text = object["ExpiresAt"].as_str().unwrap_or_default().to_owned();
        let last = dotnet_date_ms("9999-12-31T23:59:59.9990000Z")?;
        let expected = written_at_ms.max(wall_ms).saturating_add(ttl_ms).min(last);
        prop_assert_eq!(dotnet_date_ms(&text)?, expected, "{}", text);
        prop_assert_eq!(decode_record(&object).ok(), Some(record));
    }

    /// Any compare-exchange value, as the lock engine sees it: a lock, a
    /// tombstone, nothing, or a foreign holder's lock (nonce 0, the foreign
    /// ttl) exactly when it is not a record; never an error.
    #[test]
    fn item_values_decode_or_are_foreign_holders(value in item_value(), index in any::<u64>()) {
        let released = value.get("Object").and_then(|o| o.get("released")).and_then(Value::as_bool) == Some(true);
        let ttl = Duration::from_secs(300);
        match decode_held_or_none(&value, index, ttl) {
            None => prop_assert!(value.is_null()),
            Some(Item::Tombstone { index: at }) => {
                prop_assert!(released);
                prop_assert_eq!(at, index);
            }
            Some(Item::Lock(entry)) => {
                prop_assert!(!released);
                prop_assert_eq!(entry.index, index);
                prop_assert_eq!(entry.lease, None);
                match value.get("Object").and_then(record_of) {
                    Some(record) => prop_assert_eq!(entry.record, record),
                    None => {
                        let refused = matches!(decode_item(&value, index), Err(StoreError::Foreign { .. }));
                        prop_assert!(refused, "{:?} is neither a record nor foreign", value);
                        prop_assert_eq!(entry.record.nonce, 0);
                        prop_assert_eq!(entry.record.ttl_ms, 300_000);
                        prop_assert!(entry.record.owner.starts_with(FOREIGN_HOLDER));
                    }
                }
            }
        }
    }

    /// Any status and body as a PUT answer or an error answer: typed outcomes.
    #[test]
    fn put_and_error_answers_never_panic(status in status(), body in body()) {
        let store = store("http://127.0.0.1:1");
        let answer = Answer { node: "http://127.0.0.1:1".into(), status, body: body.clone() };
        match store.inner.write_answer(&answer) {
            Ok((ok, index, value)) => {
                prop_assert_eq!(status, StatusCode::OK);
                let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                prop_assert_eq!(Some(ok), parsed.get("Successful").and_then(Value::as_bool));
                prop_assert_eq!(Some(index), parsed.get("Index").and_then(Value::as_u64));
                prop_assert_eq!(value, parsed.get("Value").cloned().unwrap_or(Value::Null));
            }
            Err(error) => check_error(&error)?,
        }
        let error = store.inner.error_answer(&answer);
        check_error(&error)?;
        if matches!(status.as_u16(), 401 | 403) {
            prop_assert!(error.to_string().contains("client certificate"), "{}", error);
        }
    }
}

// ---------------------------------------------------------------------------
// The GET path (`read`) and the whole put/delete logic, over HTTP

/// The status and body every request gets.
type Canned = Arc<Mutex<(StatusCode, Vec<u8>)>>;

/// A loopback HTTP/1.1 server that answers every request with the canned
/// answer. Its tasks end with the runtime that runs them.
struct FakeNode {
    url: String,
    canned: Canned,
}

impl FakeNode {
    async fn start() -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(e) => panic!("local_addr: {e}"),
        };
        let canned: Canned = Arc::new(Mutex::new((StatusCode::OK, Vec::new())));
        let shared = Arc::clone(&canned);
        tokio::spawn(async move {
            for _ in 0..100_000 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        FakeNode { url, canned }
    }

    fn answer(&self, status: StatusCode, body: Vec<u8>) {
        *self.canned.lock().unwrap_or_else(PoisonError::into_inner) = (status, body);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves keep-alive requests on one connection (bounded in requests and bytes).
async fn serve(mut stream: TcpStream, canned: Canned) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..10_000 {
        let mut head_end = None;
        for _ in 0..64 {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                head_end = Some(at + 4);
                break;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let Some(head_end) = head_end else { return };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        for _ in 0..256 {
            if buffer.len() >= head_end + length {
                break;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..(head_end + length).min(buffer.len()));
        let (status, body) = canned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // One write: a head and a body sent apart would wait for a delayed ACK.
        let mut response = format!(
            "HTTP/1.1 {} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            status.as_u16(),
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(&body);
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn run_cases<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}\n{runner}");
    }
}

/// Any answer to `get`, `put` (absent and at an index) and `delete`: a
/// typed outcome, never a panic.
#[test]
fn answers_over_http_never_panic() {
    let runtime = runtime();
    let node = runtime.block_on(FakeNode::start());
    let store = store(&node.url);
    let counter = Cell::new(0u64);
    run_cases(96, (status(), body()), |(status, body)| {
        node.answer(status, body);
        let n = counter.get() + 1;
        counter.set(n);
        // A fresh key per call: the store remembers what it saw at a key.
        let key = |op: &str| format!("{op}/{n}");
        let record = Record {
            owner: "me@h:1".into(),
            nonce: n,
            ttl_ms: 30_000,
            written_at_ms: 0,
        };
        runtime.block_on(async {
            if let Err(error) = store.get(&key("get")).await {
                check_error(&error)?;
            }
            for (op, expect) in [
                ("put-absent", Expect::Absent),
                ("put-index", Expect::Index(5)),
            ] {
                if let Err(error) = store.put(&key(op), &record, expect, None).await {
                    check_error(&error)?;
                }
            }
            if let Err(error) = store.delete(&key("delete"), 5).await {
                check_error(&error)?;
            }
            Ok(())
        })
    });
}

/// Well-formed answers are understood exactly.
#[test]
fn known_answers_over_http() {
    let runtime = runtime();
    let node = runtime.block_on(FakeNode::start());
    let store = store(&node.url);
    let counter = Cell::new(0u64);
    run_cases(
        48,
        (support::record(), 1u64..u64::MAX),
        |(record, index)| {
            let n = counter.get() + 1;
            counter.set(n);
            let stored =
                json!({"Results": [{"Index": index, "Value": {"Object": encode_record(&record)}}]});
            node.answer(StatusCode::OK, stored.to_string().into_bytes());
            let got = runtime.block_on(store.get(&format!("known/{n}")));
            prop_assert_eq!(
                got.ok(),
                Some(Some(Entry {
                    record: record.clone(),
                    index,
                    lease: None
                }))
            );

            node.answer(StatusCode::NOT_FOUND, Vec::new());
            let got = runtime.block_on(store.get(&format!("absent/{n}")));
            prop_assert!(matches!(got, Ok(None)), "{:?}", got);

            let swapped = json!({"Successful": true, "Index": index, "Value": {"Object": encode_record(&record)}});
            node.answer(StatusCode::OK, swapped.to_string().into_bytes());
            let put =
                runtime.block_on(store.put(&format!("put/{n}"), &record, Expect::Absent, None));
            prop_assert_eq!(put.ok(), Some(PutOutcome::Swapped { index }));

            let mine = Record {
                owner: "me@h:1".into(),
                nonce: 0,
                ttl_ms: 1,
                written_at_ms: 0,
            };
            let other = json!({"Successful": false, "Index": index, "Value": {"Object": encode_record(&record)}});
            node.answer(StatusCode::OK, other.to_string().into_bytes());
            let put =
                runtime.block_on(store.put(&format!("conflict/{n}"), &mine, Expect::Absent, None));
            let expected = if record == mine {
                PutOutcome::Swapped { index }
            } else {
                PutOutcome::Conflict {
                    current: Some(Entry {
                        record: record.clone(),
                        index,
                        lease: None,
                    }),
                }
            };
            prop_assert_eq!(put.ok(), Some(expected));

            // A delete of an item we never saw reads it first: it holds someone else's record.
            node.answer(StatusCode::OK, stored.to_string().into_bytes());
            let deleted =
                runtime.block_on(store.delete(&format!("delete/{n}"), index.wrapping_add(1)));
            prop_assert_eq!(
                deleted.ok(),
                Some(DeleteOutcome::Conflict {
                    current: Some(Entry {
                        record,
                        index,
                        lease: None
                    })
                })
            );
            Ok(())
        },
    );
}
