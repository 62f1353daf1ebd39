//! The connection cap shared by every stream listener, and who gets a slot
//! when they are all taken.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::counters::{bump, Stats};
use crate::endpoint::Transport;

/// The connection slots every stream listener shares (the cap), and what
/// happens when they are all taken.
///
/// Refusing newcomers when full, as a plain cap does, lets whoever opens N
/// connections first keep the service to themselves until the idle timeout.
/// Instead, a newcomer that finds every slot taken is held (the listener
/// accepts nothing else meanwhile; later arrivals queue in the kernel
/// backlog), and a slot is freed by closing the connection that has gone
/// longest without progress (a complete request or keep-alive), as soon as
/// that is at least `grace` (the request timeout: time enough for any
/// client to send a request). A connection that keeps sending requests it
/// reads the answers to keeps its slot. If none has been without progress
/// for `grace` while the newcomer waited `grace`, the newcomer is closed.
/// So a client waits at most `grace` for a slot however the others behave,
/// and every connection, once admitted, has at least `grace` to be served.
pub(super) struct Slots {
    max: usize,
    grace: Duration,
    epoch: Instant,
    table: Mutex<SlotTable>,
    /// Signalled whenever a connection ends and gives its slot back.
    freed: Notify,
}

#[derive(Default)]
struct SlotTable {
    next_id: u64,
    live: HashMap<u64, Slot>,
}

struct Slot {
    /// When the connection last made progress, in ms since `Slots::epoch`.
    progress: Arc<AtomicU64>,
    /// Ends the connection's task; `None` until the task is spawned.
    abort: Option<AbortHandle>,
    transport: Transport,
    peer: SocketAddr,
}

/// What holds a slot: dropped when the connection's task ends (or is
/// aborted), which gives the slot back.
pub(super) struct SlotGuard {
    pub(super) id: u64,
    slots: Arc<Slots>,
    progress: Arc<AtomicU64>,
}

impl SlotGuard {
    /// Records progress (a complete request or keep-alive): the connection
    /// moves to the back of the eviction order.
    pub(super) fn touch(&self) {
        self.progress.store(self.slots.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().live.remove(&self.id);
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    pub(super) fn new(max: usize, grace: Duration) -> Slots {
        Slots {
            max,
            grace: grace.max(Duration::from_millis(1)),
            epoch: Instant::now(),
            table: Mutex::new(SlotTable::default()),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        // A panic while holding the lock leaves the table consistent (every
        // critical section is a single map operation): keep using it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a connection from `peer`, freeing one as described on
    /// [`Slots`] if they are all taken; `None` if none could be had within
    /// `grace`.
    pub(super) async fn admit(
        self: &Arc<Self>,
        transport: Transport,
        peer: SocketAddr,
        stats: &Stats,
    ) -> Option<SlotGuard> {
        if self.max == 0 {
            return None;
        }
        let give_up = Instant::now() + self.grace;
        loop {
            // Registered before looking, so a slot freed meanwhile wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let next_chance = {
                let mut table = self.lock();
                if table.live.len() < self.max {
                    return Some(self.insert(&mut table, transport, peer));
                }
                let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
                let stalest = table
                    .live
                    .iter()
                    .filter(|(_, slot)| slot.abort.is_some())
                    .map(|(id, slot)| (*id, slot.progress.load(Ordering::Relaxed)))
                    // Ties (same millisecond) go to the earlier admitted.
                    .min_by_key(|(id, progress)| (*progress, *id));
                match stalest {
                    Some((id, progress)) if self.now_ms().saturating_sub(progress) >= grace_ms => {
                        if let Some(evicted) = table.live.remove(&id) {
                            if let Some(abort) = evicted.abort {
                                abort.abort();
                            }
                            tracing::debug!(peer = %evicted.peer, "evicting the stalest connection");
                            bump(
                                &stats
                                    .cell(evicted.transport, &evicted.peer)
                                    .connections_evicted,
                            );
                        }
                        return Some(self.insert(&mut table, transport, peer));
                    }
                    Some((_, progress)) => {
                        self.epoch + Duration::from_millis(progress.saturating_add(grace_ms))
                    }
                    None => give_up, // only slots still being set up: wait for a change
                }
            };
            if Instant::now() >= give_up {
                return None;
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(next_chance.min(give_up)) => {}
            }
        }
    }

    fn insert(
        self: &Arc<Self>,
        table: &mut SlotTable,
        transport: Transport,
        peer: SocketAddr,
    ) -> SlotGuard {
        let id = table.next_id;
        table.next_id += 1;
        let progress = Arc::new(AtomicU64::new(self.now_ms()));
        table.live.insert(
            id,
            Slot {
                progress: progress.clone(),
                abort: None,
                transport,
                peer,
            },
        );
        SlotGuard {
            id,
            slots: self.clone(),
            progress,
        }
    }

    /// Makes the connection in slot `id` evictable by handing over its task.
    pub(super) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(slot) = self.lock().live.get_mut(&id) {
            slot.abort = Some(abort);
        }
    }
}
