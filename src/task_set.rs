//! Tasks known by an id, the bookkeeping both the attempts and the DNS
//! lookups of a dial need: spawn one per id, abort one by its id, join the
//! next result with its id, and close them all before the dial returns.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use tokio::task::{AbortHandle, Id, JoinSet};

/// Tasks keyed by `K`, each giving a `T`.
pub(crate) struct TaskSet<K, T> {
    set: JoinSet<T>,
    /// Which id a task serves, to name the one that panicked.
    ids: HashMap<Id, K>,
    /// How to abort the running task of an id.
    aborts: HashMap<K, AbortHandle>,
}

impl<K: Copy + Eq + Hash, T: Send + 'static> TaskSet<K, T> {
    /// An empty set.
    pub(crate) fn new() -> Self {
        TaskSet {
            set: JoinSet::new(),
            ids: HashMap::new(),
            aborts: HashMap::new(),
        }
    }

    /// Runs `task` on the tokio runtime as the task of `id` (one task per id).
    pub(crate) fn spawn(&mut self, id: K, task: impl Future<Output = T> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.ids.insert(handle.id(), id);
        self.aborts.insert(id, handle);
    }

    /// Aborts the task of `id` (dropping its future closes what it holds);
    /// its result is never joined.
    pub(crate) fn abort(&mut self, id: K) {
        if let Some(handle) = self.aborts.remove(&id) {
            handle.abort();
        }
    }

    /// The next task to end: its id and its result, or the panic's text
    /// if it panicked. Aborted tasks are skipped. Pending for ever while no
    /// task runs, so it can sit in a `select!`. Cancel-safe.
    pub(crate) async fn next(&mut self) -> (K, Result<T, String>) {
        loop {
            let Some(joined) = self.set.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (task, result) = match joined {
                Ok((task, value)) => (task, Ok(value)),
                Err(err) if err.is_panic() => (err.id(), Err(err.to_string())),
                Err(err) => {
                    // Aborted: nobody waits for it.
                    self.ids.remove(&err.id());
                    continue;
                }
            };
            let id = self
                .ids
                .remove(&task)
                .expect("every task is spawned with its id");
            self.aborts.remove(&id);
            return (id, result);
        }
    }

    /// Aborts every task and waits until each has really ended, so that
    /// nothing it holds (a socket) outlives the caller.
    pub(crate) async fn close(&mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        self.ids.clear();
        self.aborts.clear();
    }
}
