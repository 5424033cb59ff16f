//! Strategies shared by the answer-decoder property tests of the etcd and
//! RavenDB backends (`etcd_proptest.rs`, `ravendb_proptest.rs`): arbitrary
//! JSON biased towards the field names the decoders look for, arbitrary
//! records, and byte-level mutations of valid answers.

use proptest::prelude::*;
use serde_json::Value;

use crate::store::Record;

/// Field names the decoders read, so that arbitrary objects often have them.
const FIELDS: &[&str] = &[
    "owner",
    "nonce",
    "ttl_ms",
    "written_at_ms",
    "written_at",
    "Results",
    "Index",
    "Value",
    "Object",
    "released",
    "previous_index",
    "Successful",
    "Type",
    "Message",
    "@metadata",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => ".{0,6}",
    ]
}

/// Numbers at the edges of what `as_u64` / `u64` accept, and beyond.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        any::<f64>().prop_filter_map("finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        ".{0,8}".prop_map(Value::String),
        // Numbers written as strings (the RavenDB nonce), some past u64.
        "-?[0-9]{1,22}".prop_map(Value::String),
    ]
}

/// Arbitrary JSON, a few levels deep.
pub(crate) fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Any record: owners with any text (quotes, escapes, non-ASCII), any numbers.
pub(crate) fn record() -> impl Strategy<Value = Record> {
    (any::<String>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(owner, nonce, ttl_ms, written_at_ms)| Record {
            owner: owner.into(),
            nonce,
            ttl_ms,
            written_at_ms,
        },
    )
}

#[derive(Clone, Debug)]
pub(crate) enum ByteEdit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

pub(crate) fn byte_edits() -> impl Strategy<Value = Vec<ByteEdit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
            (
                any::<usize>(),
                prop_oneof![prop::sample::select(b"{}[]\",:0-\\".to_vec()), any::<u8>()]
            )
                .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
            any::<usize>().prop_map(ByteEdit::Delete),
            any::<usize>().prop_map(ByteEdit::Truncate),
        ],
        1..4,
    )
}

/// Applies `edits` to `bytes` (positions wrap around).
pub(crate) fn edit(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            ByteEdit::Flip(i, b) if !bytes.is_empty() => bytes[i % len] ^= b | 1,
            ByteEdit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            ByteEdit::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            ByteEdit::Truncate(i) => bytes.truncate(i % len),
            _ => {}
        }
    }
    bytes
}
