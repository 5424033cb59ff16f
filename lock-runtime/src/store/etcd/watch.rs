//! One etcd watch stream for every [`watch`](super::EtcdStore) call of one store.
//!
//! etcd multiplexes watches on one gRPC stream: each create request gets a watch id,
//! events come back tagged with it, and a cancel request names it. A store keeps one
//! such stream ([`SharedStream`]) and every `watch()` call registers on it
//! ([`Registration`]); 10,000 held locks are then 10,000 watch ids on one stream instead
//! of 10,000 streams.
//!
//! - Ids: etcd answers the create requests of one stream in the order it got them (its
//!   receive loop handles them one by one and queues one "created" answer each, also for
//!   a refused one), so the n-th "created" answer belongs to the n-th create sent. Every
//!   create request is queued for sending in the same critical section that appends its
//!   ticket to [`State::pending`], and one task sends them in that order. This needs no
//!   client-chosen ids (which etcd only accepts from 3.4 on, and which a refusal may not
//!   echo).
//! - One shot: a registration ends at the first answer that says the key may have
//!   changed (an event, or a compaction past its start); its id is then cancelled.
//! - Cancel safety: dropping a registration (the caller's future) cancels its id, or,
//!   when the "created" answer has not come yet, marks it so that its id is cancelled
//!   as soon as that answer names it.
//! - Heartbeat: a stream that has been quiet for 3/4 of the HTTP/2 ping interval gets a
//!   throw-away create request (cancelled once created), whose answer is due within the
//!   request timeout. That finds a stopped member even on an idle stream, and the answer
//!   keeps the connection from looking idle: etcd's server (grpc-go's default ping
//!   policy, 5 s minimum between client pings unless it sent data in between) closes a
//!   connection after the third unanswered-by-data HTTP/2 ping, which on an idle
//!   connection with 1 s pings broke every watch (and the lease keep-alive stream on it)
//!   after 4 s.
//! - Failure: when the stream breaks (an error, its end, HTTP/2 pings unanswered, the
//!   member losing its leader under `require_leader`, no answer to a heartbeat, or no
//!   answer at all to a create within the request timeout), every registration on it
//!   ends with the same error and the stream is not used again; the next `watch()` opens
//!   a new one on another endpoint.
//! - Tasks: a reader task reads the answers and hands them out; a writer task sends the
//!   create and cancel requests (the reader never waits on a send, so a full request
//!   channel cannot stop the answers from being read). The writer ends once the store
//!   and every registration are gone, and the reader then drops the stream (which
//!   resets it on the server).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcd_client::{WatchOptions, WatchRequestSender, WatchResponse, WatchResponseStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::error::{BACKEND, EtcdError, store_error};
use crate::store::StoreError;

/// How a registration ended.
#[derive(Clone, Debug)]
pub(super) enum WatchEnd {
    /// The key may no longer hold what the caller saw.
    Changed,
    /// The stream broke or its member stopped answering: re-arm (on another stream).
    Unavailable(Arc<str>),
    /// etcd refused or cancelled this watch.
    Refused(Arc<str>),
}

/// How the reader keeps a quiet stream checked (and its connection busy).
pub(super) struct Heartbeat {
    /// The key the heartbeat's throw-away watch names (nobody writes it).
    pub(super) key: String,
    /// How long the stream may be quiet before a heartbeat is sent.
    pub(super) quiet: Duration,
    /// How long the answer to a heartbeat may take before the stream counts as broken.
    pub(super) answer_within: Duration,
}

/// A request for the writer task.
enum Command {
    Create { key: String, start_revision: i64 },
    Cancel(i64),
}

/// One caller waiting on the stream.
struct Waiter {
    /// Its watch id, once etcd's "created" answer named it.
    id: Option<i64>,
    /// Told when the watch exists on the server (dropped if it ends first).
    created: Option<oneshot::Sender<()>>,
    /// Told how it ended.
    done: oneshot::Sender<WatchEnd>,
}

#[derive(Default)]
struct State {
    /// Set once the stream is broken or closed: nothing registers on it any more.
    ended: bool,
    next_ticket: u64,
    /// Tickets whose create request is queued or sent, in that order, not yet answered.
    /// A ticket no longer in `waiters` was dropped by its caller: its id is cancelled
    /// when it comes.
    pending: VecDeque<u64>,
    waiters: HashMap<u64, Waiter>,
    /// Live watch ids and their tickets.
    by_id: HashMap<i64, u64>,
    /// Answers received so far (a stream that answers nothing is taken for broken).
    heard: u64,
}

struct Shared {
    state: Mutex<State>,
    stop_reader: Notify,
    stop_writer: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the stream: every registration on it ends with `end`, both tasks stop.
    fn end(&self, end: &WatchEnd) {
        let waiters: Vec<Waiter> = {
            let mut state = self.state();
            state.ended = true;
            state.pending.clear();
            state.by_id.clear();
            state.waiters.drain().map(|(_, w)| w).collect()
        };
        for waiter in waiters {
            let _ = waiter.done.send(end.clone());
        }
        self.stop_reader.notify_one();
        self.stop_writer.notify_one();
    }

    /// Queues a heartbeat: a create request for `key` that no caller waits for (so its
    /// id is cancelled as soon as it is created). etcd answers every create request at
    /// once, on every version (unlike progress requests, which etcd 3.5 defers while
    /// watchers catch up), also when it refuses one.
    fn heartbeat(&self, commands: &mpsc::UnboundedSender<Command>, key: &str) {
        let mut state = self.state();
        if state.ended {
            return;
        }
        let create = Command::Create {
            key: key.to_owned(),
            start_revision: 0,
        };
        if commands.send(create).is_ok() {
            let ticket = state.next_ticket;
            state.next_ticket = state.next_ticket.wrapping_add(1);
            state.pending.push_back(ticket);
        }
    }

    /// Hands one answer of the stream to the registration it names. Cancels the ids of
    /// watches that ended or were dropped. `Err`: the answer makes no sense for this
    /// stream (a "created" answer with no create pending).
    fn dispatch(
        &self,
        message: &WatchResponse,
        commands: &mpsc::WeakUnboundedSender<Command>,
    ) -> Result<(), WatchEnd> {
        let id = message.watch_id();
        let mut cancel = None;
        let mut finished = None;
        {
            let mut state = self.state();
            state.heard = state.heard.wrapping_add(1);
            if message.created() {
                let Some(ticket) = state.pending.pop_front() else {
                    return Err(WatchEnd::Unavailable(
                        "etcd answered a watch create request that was not sent".into(),
                    ));
                };
                match state.waiters.get_mut(&ticket) {
                    // Its caller went away before the answer: cancel the new id.
                    None => {
                        if !message.canceled() {
                            cancel = Some(id);
                        }
                    }
                    Some(_) if message.canceled() => {
                        let reason = format!("etcd refused the watch: {}", message.cancel_reason());
                        finished = state
                            .waiters
                            .remove(&ticket)
                            .map(|w| (w, WatchEnd::Refused(reason.into())));
                    }
                    Some(waiter) => {
                        waiter.id = Some(id);
                        if let Some(created) = waiter.created.take() {
                            let _ = created.send(());
                        }
                        state.by_id.insert(id, ticket);
                    }
                }
            }
            // A "created" answer carries no events; the checks below are for the others
            // (and harmless for it).
            let changed = message.compact_revision() > 0 || !message.events().is_empty();
            if (changed || message.canceled())
                && !message.created()
                && let Some(ticket) = state.by_id.remove(&id)
                && let Some(waiter) = state.waiters.remove(&ticket)
            {
                if changed {
                    // Compacted past its start means it changed since: wake the caller.
                    // Cancel the id also then: etcd keeps a compacted watcher until it is
                    // cancelled, though it marks the answer cancelled.
                    cancel = Some(id);
                    finished = Some((waiter, WatchEnd::Changed));
                } else {
                    let reason = format!("the watch was cancelled: {}", message.cancel_reason());
                    finished = Some((waiter, WatchEnd::Refused(reason.into())));
                }
            }
        }
        if let Some(id) = cancel
            && let Some(commands) = commands.upgrade()
        {
            let _ = commands.send(Command::Cancel(id));
        }
        if let Some((waiter, end)) = finished {
            let _ = waiter.done.send(end);
        }
        Ok(())
    }
}

/// The watch stream all watches of one store share, on one endpoint.
pub(super) struct SharedStream {
    /// The endpoint (index) it is open on.
    pub(super) endpoint: usize,
    url: String,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SharedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state();
        f.debug_struct("SharedStream")
            .field("endpoint", &self.url)
            .field("ended", &state.ended)
            .field("watches", &state.waiters.len())
            .finish()
    }
}

impl SharedStream {
    /// Takes over a watch stream whose first create request (for `key` from
    /// `start_revision`) has been answered with `first`, and registers that first
    /// watch. Spawns the stream's reader and writer tasks.
    pub(super) fn start(
        endpoint: usize,
        url: String,
        stream: etcd_client::WatchStream,
        first: &WatchResponse,
        heartbeat: Heartbeat,
    ) -> (Arc<SharedStream>, Registration) {
        let (sender, responses) = stream.split();
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop_reader: Notify::new(),
            stop_writer: Notify::new(),
        });
        let stream = Arc::new(SharedStream {
            endpoint,
            url,
            commands,
            shared: Arc::clone(&shared),
        });
        // The first create was sent when the stream was opened: register it as pending
        // without queueing a request, then hand it its answer.
        let registration = stream.push_pending(&mut shared.state());
        let weak = stream.commands.downgrade();
        if let Err(end) = shared.dispatch(first, &weak) {
            shared.end(&end);
        }
        tokio::spawn(write(sender, receiver, Arc::clone(&shared)));
        let url = stream.url.clone();
        tokio::spawn(read(responses, Arc::clone(&shared), weak, url, heartbeat));
        (stream, registration)
    }

    /// Registers a watch of `key` from `start_revision`; `None` if the stream is no
    /// longer usable (broken, or its tasks are gone).
    pub(super) fn register(
        self: &Arc<Self>,
        key: &str,
        start_revision: i64,
    ) -> Option<Registration> {
        if self.commands.is_closed() {
            return None;
        }
        self.enqueue(Command::Create {
            key: key.to_owned(),
            start_revision,
        })
    }

    /// Queues a create request and appends its pending ticket in one critical section,
    /// so that tickets and requests keep one order.
    fn enqueue(self: &Arc<Self>, command: Command) -> Option<Registration> {
        let mut state = self.shared.state();
        if state.ended || self.commands.send(command).is_err() {
            return None;
        }
        Some(self.push_pending(&mut state))
    }

    /// Appends a pending ticket (its create request is queued or sent already).
    fn push_pending(self: &Arc<Self>, state: &mut State) -> Registration {
        let (created_tx, created) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let ticket = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        state.pending.push_back(ticket);
        state.waiters.insert(
            ticket,
            Waiter {
                id: None,
                created: Some(created_tx),
                done: done_tx,
            },
        );
        Registration {
            stream: Arc::clone(self),
            ticket,
            heard_at_start: state.heard,
            created: Some(created),
            done,
        }
    }

    fn unavailable(&self, message: impl Into<String>) -> StoreError {
        store_error(&self.url, EtcdError::Stream(message.into()))
    }

    fn error(&self, end: WatchEnd) -> Option<StoreError> {
        match end {
            WatchEnd::Changed => None,
            WatchEnd::Unavailable(m) => Some(self.unavailable(&*m)),
            WatchEnd::Refused(m) => Some(store_error(
                &self.url,
                EtcdError::WatchRefused(m.to_string()),
            )),
        }
    }
}

/// One `watch()` call registered on the shared stream. Dropping it cancels its watch id.
pub(super) struct Registration {
    stream: Arc<SharedStream>,
    ticket: u64,
    /// The stream's answer count when the create was queued.
    heard_at_start: u64,
    created: Option<oneshot::Receiver<()>>,
    done: oneshot::Receiver<WatchEnd>,
}

impl Registration {
    /// Waits until the key may have changed. Waiting for etcd to create the watch is
    /// bounded by `request_timeout` (a stream that answers nothing at all in that time
    /// is taken for broken); waiting for a change is bounded by the caller.
    pub(super) async fn wait(mut self, request_timeout: Duration) -> Result<(), StoreError> {
        if let Some(created) = self.created.take()
            && tokio::time::timeout(request_timeout, created)
                .await
                .is_err()
        {
            let silent = {
                let state = self.stream.shared.state();
                !state.ended && state.heard == self.heard_at_start
            };
            let message = format!("no answer to a watch request within {request_timeout:?}");
            if silent {
                self.stream
                    .shared
                    .end(&WatchEnd::Unavailable(message.as_str().into()));
            }
            return Err(self.stream.unavailable(message));
        }
        match (&mut self.done).await {
            Ok(end) => self.stream.error(end).map_or(Ok(()), Err),
            Err(_) => Err(self.stream.unavailable("the shared watch stream stopped")),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let cancel = {
            let mut state = self.stream.shared.state();
            match state.waiters.remove(&self.ticket) {
                Some(Waiter { id: Some(id), .. }) => {
                    state.by_id.remove(&id);
                    Some(id)
                }
                // Ended already, or still pending (its id is cancelled when it comes).
                _ => None,
            }
        };
        if let Some(id) = cancel {
            let _ = self.stream.commands.send(Command::Cancel(id));
        }
    }
}

/// Ends the stream if the task holding it stops for any reason (also when its runtime
/// drops it), so that no registration waits forever.
struct EndOnDrop(Arc<Shared>, &'static str);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end(&WatchEnd::Unavailable(self.1.into()));
    }
}

/// Sends the queued create and cancel requests, in order.
async fn write(
    mut sender: WatchRequestSender,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let _end = EndOnDrop(Arc::clone(&shared), "the shared watch stream was closed");
    loop {
        let command = tokio::select! {
            biased;
            () = shared.stop_writer.notified() => return,
            command = commands.recv() => command,
        };
        // None: the store and every registration are gone.
        let Some(command) = command else { return };
        let send = async {
            match command {
                Command::Create {
                    key,
                    start_revision,
                } => {
                    let options = WatchOptions::new().with_start_revision(start_revision);
                    sender.watch(key, Some(options)).await
                }
                Command::Cancel(id) => sender.cancel(id).await,
            }
        };
        let sent = tokio::select! {
            biased;
            () = shared.stop_writer.notified() => return,
            sent = send => sent,
        };
        if sent.is_err() {
            // The request side is gone: so is the stream.
            return;
        }
    }
}

/// Reads the stream's answers and hands them out until it breaks or is closed; sends a
/// heartbeat when it has been quiet for a while.
async fn read(
    mut responses: WatchResponseStream,
    shared: Arc<Shared>,
    commands: mpsc::WeakUnboundedSender<Command>,
    url: String,
    heartbeat: Heartbeat,
) {
    let end = EndOnDrop(Arc::clone(&shared), "the shared watch stream was closed");
    let mut due = Instant::now() + heartbeat.quiet;
    let mut awaiting = false;
    loop {
        let message = tokio::select! {
            biased;
            () = shared.stop_reader.notified() => return,
            message = responses.message() => Some(message),
            () = tokio::time::sleep_until(due) => None,
        };
        let broken = match message {
            None if awaiting => WatchEnd::Unavailable(
                format!(
                    "no answer on the watch stream within {:?}",
                    heartbeat.answer_within
                )
                .into(),
            ),
            None => {
                if let Some(commands) = commands.upgrade() {
                    shared.heartbeat(&commands, &heartbeat.key);
                }
                awaiting = true;
                due = Instant::now() + heartbeat.answer_within;
                continue;
            }
            Some(Ok(Some(message))) => {
                awaiting = false;
                due = Instant::now() + heartbeat.quiet;
                match shared.dispatch(&message, &commands) {
                    Ok(()) => continue,
                    Err(end) => end,
                }
            }
            Some(Ok(None)) => WatchEnd::Unavailable("the watch stream closed".into()),
            Some(Err(error)) => {
                let error = EtcdError::from(error);
                let message = error.to_string().into();
                if error.is_transient() {
                    WatchEnd::Unavailable(message)
                } else {
                    WatchEnd::Refused(message)
                }
            }
        };
        tracing::debug!(
            backend = BACKEND,
            endpoint = %url,
            "etcd shared watch stream broken; its watches end"
        );
        shared.end(&broken);
        drop(end);
        return;
    }
}
