//! Property tests of the etcd answer decoders: [`EtcdStore::decode`] (a stored
//! value and its revisions into an [`Entry`]) and [`EtcdStore::current_from`]
//! (the failure branch of a txn). Whatever the server or another client put
//! there, decoding never panics and fails with a typed [`StoreError`]; a value
//! written by `put` (`serde_json::to_vec(record)`) decodes back to the record.
//!
//! The answers are built with etcd-client's `pub-response-field` feature
//! (enabled by this crate's `etcd` feature for exactly this).

use etcd_client::proto::{
    PbDeleteResponse, PbKeyValue, PbPutResponse, PbRangeResponse, PbTxnResponse,
};
use etcd_client::{DeleteResponse, GetResponse, KeyValue, PutResponse, TxnOpResponse, TxnResponse};
use proptest::prelude::*;

use super::EtcdStore;
use crate::store::{LeaseId, Record, StoreError};

use crate::store::proptest_support as support;

fn store() -> EtcdStore {
    // Nothing is contacted: the decoders only need the endpoint for errors.
    EtcdStore::from_url("etcd://127.0.0.1:1/locks").unwrap_or_else(|e| panic!("{e}"))
}

fn pb(value: Vec<u8>, mod_revision: i64, lease: i64) -> PbKeyValue {
    PbKeyValue {
        key: b"locks/k".to_vec(),
        create_revision: mod_revision,
        mod_revision,
        version: 1,
        value,
        lease,
    }
}

fn revision() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 1i64..1_000_000,
        1 => Just(0i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ]
}

fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), any::<i64>()]
}

/// Stored values: garbage, JSON that is not a record, and damaged records.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        support::json().prop_map(|v| v.to_string().into_bytes()),
        (support::record(), support::byte_edits()).prop_map(|(record, edits)| {
            support::edit(serde_json::to_vec(&record).unwrap_or_default(), &edits)
        }),
    ]
}

/// Checks one decode against what the inputs allow.
fn check_decode(
    store: &EtcdStore,
    value: &[u8],
    mod_revision: i64,
    lease: i64,
) -> Result<(), TestCaseError> {
    let pb = pb(value.to_vec(), mod_revision, lease);
    let kv: &KeyValue = (&pb).into();
    let as_record = serde_json::from_slice::<Record>(value);
    match store.decode(kv) {
        Ok(entry) => {
            prop_assert!(mod_revision >= 0, "negative revision accepted");
            prop_assert_eq!(entry.index, mod_revision.unsigned_abs());
            prop_assert_eq!(entry.lease, (lease != 0).then_some(LeaseId(lease)));
            prop_assert_eq!(Some(entry.record), as_record.ok());
        }
        Err(StoreError::Foreign { reason }) => {
            prop_assert!(
                as_record.is_err(),
                "a record was called foreign: {}",
                reason
            );
            prop_assert!(!reason.is_empty());
        }
        Err(StoreError::Backend { source, .. }) => {
            prop_assert!(as_record.is_ok() && mod_revision < 0, "{}", source);
            prop_assert!(source.to_string().contains("negative"), "{}", source);
        }
        Err(other) => prop_assert!(false, "unexpected error {:?}", other),
    }
    Ok(())
}

fn op_response() -> impl Strategy<Value = TxnOpResponse> {
    let kvs = prop::collection::vec(
        (value(), revision(), lease()).prop_map(|(v, r, l)| pb(v, r, l)),
        0..3,
    );
    prop_oneof![
        1 => Just(TxnOpResponse::Put(PutResponse(PbPutResponse::default()))),
        1 => Just(TxnOpResponse::Delete(DeleteResponse(PbDeleteResponse::default()))),
        1 => Just(TxnOpResponse::Txn(TxnResponse(PbTxnResponse::default()))),
        3 => kvs.prop_map(|kvs| {
            TxnOpResponse::Get(GetResponse(PbRangeResponse {
                count: i64::try_from(kvs.len()).unwrap_or(i64::MAX),
                kvs,
                ..PbRangeResponse::default()
            }))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any stored bytes, any revision, any lease: an entry or a typed error.
    #[test]
    fn stored_values_decode_or_fail_typed(value in value(), mod_revision in revision(), lease in lease()) {
        check_decode(&store(), &value, mod_revision, lease)?;
    }

    /// What `put` writes decodes back to the same record, index and lease.
    #[test]
    fn written_records_round_trip(record in support::record(), mod_revision in 0i64..=i64::MAX, lease in lease()) {
        let value = serde_json::to_vec(&record).unwrap_or_else(|e| panic!("{e}"));
        let pb = pb(value, mod_revision, lease);
        let kv: &KeyValue = (&pb).into();
        let entry = store().decode(kv);
        prop_assert!(entry.is_ok(), "{:?}", entry);
        if let Ok(entry) = entry {
            prop_assert_eq!(entry.record, record);
            prop_assert_eq!(entry.index, mod_revision.unsigned_abs());
            prop_assert_eq!(entry.lease, (lease != 0).then_some(LeaseId(lease)));
        }
    }

    /// The failure branch of a txn, in any shape: the first range's first key,
    /// decoded as above, or `None`.
    #[test]
    fn txn_failure_branches_decode_or_fail_typed(responses in prop::collection::vec(op_response(), 0..4)) {
        let store = store();
        let first = responses.iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().cloned()),
            _ => None,
        });
        let outcome = store.current_from(responses);
        match first {
            None | Some(None) => prop_assert!(matches!(outcome, Ok(None)), "{:?}", outcome),
            Some(Some(kv)) => {
                let direct = store.decode(&kv);
                match (&outcome, &direct) {
                    (Ok(Some(a)), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(StoreError::Foreign { .. }), Err(StoreError::Foreign { .. }))
                    | (Err(StoreError::Backend { .. }), Err(StoreError::Backend { .. })) => {}
                    _ => prop_assert!(false, "{:?} vs {:?}", outcome, direct),
                }
            }
        }
    }
}

#[test]
fn known_answers() {
    let store = store();
    let record = Record {
        owner: "u@h:1".into(),
        nonce: 7,
        ttl_ms: 30_000,
        written_at_ms: 1,
    };
    let good = serde_json::to_vec(&record).unwrap_or_else(|e| panic!("{e}"));
    let pb_good = pb(good.clone(), 42, 0);
    let decoded = store.decode((&pb_good).into());
    assert!(
        matches!(&decoded, Ok(e) if e.record == record && e.index == 42 && e.lease.is_none()),
        "{decoded:?}"
    );
    let pb_foreign = pb(b"locked by cron".to_vec(), 42, 0);
    assert!(matches!(
        store.decode((&pb_foreign).into()),
        Err(StoreError::Foreign { .. })
    ));
    let pb_negative = pb(good, -1, 0);
    assert!(matches!(
        store.decode((&pb_negative).into()),
        Err(StoreError::Backend { .. })
    ));
}
