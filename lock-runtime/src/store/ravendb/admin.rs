//! Operations around the contract: the cluster topology, creating the
//! database, pruning old tombstones, checking a node answers.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::config::parse_node;
use super::mapping::{is_tombstone, now_ms};
use super::transport::{QUERY, RavenDbStore};
use crate::store::{CompareExchange, StoreError};

impl RavenDbStore {
    /// Asks the cluster (any reachable node) for its topology and adds the nodes
    /// it names (members, promotables, watchers) that are not configured yet, so
    /// requests can fail over to them. Returns the node list afterwards. Nodes with
    /// another scheme than the configured ones are ignored.
    pub async fn refresh_topology(&self) -> Result<Vec<String>, StoreError> {
        let inner = &self.inner;
        let answer = inner.send(Method::GET, "/cluster/topology", None).await?;
        if answer.status != StatusCode::OK {
            return Err(inner.error_answer(&answer));
        }
        let parsed = inner.json_object(&answer)?;
        // Read group by group: a node a newer server lists in another shape is
        // skipped, not an error.
        let topology = parsed
            .get("Topology")
            .ok_or_else(|| inner.bad_answer(&answer, "no Topology"))?;
        let mut learned = Vec::new();
        for group in ["Members", "Promotables", "Watchers", "AllNodes"] {
            if let Some(map) = topology.get(group).and_then(Value::as_object) {
                for url in map.values().filter_map(Value::as_str) {
                    if let Ok(node) = parse_node(url)
                        && node.starts_with("https://") == inner.https
                        && !learned.contains(&node)
                    {
                        learned.push(node);
                    }
                }
            }
        }
        let mut nodes = inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        let mut merged: Vec<String> = nodes.as_ref().clone();
        for node in learned {
            if !merged.iter().any(|known| known.eq_ignore_ascii_case(&node)) {
                tracing::debug!(node, "distlock: learned a RavenDB node from the topology");
                merged.push(node);
            }
        }
        *nodes = Arc::new(merged.clone());
        Ok(merged)
    }

    /// Creates the database (replication factor 1) unless it exists. Needs
    /// operator rights on a secured server.
    pub async fn ensure_database(&self) -> Result<(), StoreError> {
        let db = &self.inner.database;
        let path = format!(
            "/admin/databases?name={}&replicationFactor=1",
            utf8_percent_encode(db, QUERY)
        );
        let body = json!({ "DatabaseName": db }).to_string().into_bytes();
        let answer = self.inner.send(Method::PUT, &path, Some(body)).await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT => Ok(()),
            _ => Err(self.inner.error_answer(&answer)),
        }
    }

    /// Deletes the tombstones (`{"released":true,..}`, left by the releases of
    /// earlier distlock versions, see the module docs) under this store's key
    /// prefix that were written more than `older_than` ago by the local wall
    /// clock, and returns how many went. Kept as the documented way to clean
    /// all old tombstones at once after an upgrade: releases delete the item
    /// now and write no tombstones, and a client that meets one on a key it
    /// uses deletes it by itself, but tombstones on keys no client touches
    /// again stay until this runs (RavenDB 4.1 never sweeps `@expires`).
    ///
    /// Each deletion is conditioned on the tombstone's index, so a lock taken in
    /// the meantime is never touched. Keep `older_than` far above any request
    /// timeout (an hour or more): a renewal delayed past it could otherwise meet a
    /// missing key, which 4.1 would create.
    pub async fn prune_tombstones(&self, older_than: Duration) -> Result<u64, StoreError> {
        const PAGE: usize = 256;
        const MAX_PAGES: usize = 4096;
        let inner = &self.inner;
        let cutoff =
            now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
        let mut start = 0usize;
        let mut pruned = 0;
        for _ in 0..MAX_PAGES {
            let path = format!(
                "/databases/{}/cmpxchg?startsWith={}&start={start}&pageSize={PAGE}",
                utf8_percent_encode(&inner.database, QUERY),
                utf8_percent_encode(&inner.prefix, QUERY)
            );
            let answer = inner.send(Method::GET, &path, None).await?;
            if answer.status == StatusCode::NOT_FOUND && answer.body.is_empty() {
                break;
            }
            if answer.status != StatusCode::OK {
                return Err(inner.error_answer(&answer));
            }
            let results = inner.results(&answer)?;
            let mut kept = 0;
            // Item by item: anything that is not a tombstone we wrote is kept.
            for item in &results {
                let old_tombstone = item
                    .get("Value")
                    .and_then(|v| v.get("Object"))
                    .filter(|o| is_tombstone(o))
                    .and_then(|o| o.get("released_at_ms"))
                    .and_then(Value::as_u64)
                    .is_some_and(|at| at < cutoff);
                let (Some(key), Some(index)) = (
                    item.get("Key").and_then(Value::as_str),
                    item.get("Index").and_then(Value::as_u64),
                ) else {
                    kept += 1;
                    continue;
                };
                if !old_tombstone {
                    kept += 1;
                    continue;
                }
                let (ok, _, value) = inner.delete_item(key, index).await?;
                if ok && !value.is_null() {
                    pruned += 1;
                    inner.forget(key);
                } else {
                    kept += 1;
                }
            }
            if results.len() < PAGE {
                break;
            }
            // Deleted items leave the listing; the kept ones are skipped next time.
            start += kept;
        }
        Ok(pruned)
    }

    /// Checks that a node answers and the database exists.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.get("distlock/ping").await.map(|_| ())
    }
}
