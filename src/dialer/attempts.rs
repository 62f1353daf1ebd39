//! The attempts of one dial as tasks: started and cancelled by id as the
//! machine says, their milestones and results joined back as the machine's
//! inputs.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::connect::{ConnectConfig, Connected, Progress};
use crate::dial_machine::Input;
use crate::endpoint::{AttemptError, Endpoint, ErrorClass};
use crate::race::AttemptId;
use crate::task_set::TaskSet;

/// The progress callback an attempt is given.
pub(crate) type ProgressFn = Box<dyn Fn(Progress) + Send + Sync>;

/// What an attempt's task gives back: when its transport came up (if it
/// said so) and its result.
type Ended = (Option<Instant>, Result<Connected, AttemptError>);

/// An attempt that ended, as the machine's inputs: its own record of its
/// transport-up time first (its message may not be in yet), then its result.
pub(crate) struct AttemptEnded {
    pub(crate) inputs: Vec<Input>,
    /// The connection of a success: kept only if the machine makes the
    /// attempt the winner, closed (dropped) otherwise.
    pub(crate) connected: Option<(AttemptId, Connected)>,
}

/// The attempts of one dial. `F` makes an attempt from its endpoint, the
/// connection settings and the progress callback ([`crate::connect::attempt`]
/// outside tests).
pub(crate) struct Attempts<F> {
    run: F,
    connect: Arc<ConnectConfig>,
    tasks: TaskSet<AttemptId, Ended>,
    progress_tx: mpsc::UnboundedSender<(AttemptId, Instant)>,
}

/// The attempts' transport-ups, timestamped where they happen: an
/// attempt's task may run on another worker, ahead of the dial's loop.
pub(crate) struct TransportUps {
    rx: mpsc::UnboundedReceiver<(AttemptId, Instant)>,
    /// Keeps the channel open while no attempt runs.
    _tx: mpsc::UnboundedSender<(AttemptId, Instant)>,
}

impl TransportUps {
    /// The next transport-up. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Input {
        match self.rx.recv().await {
            Some((id, at)) => Input::TransportUp(id, at),
            None => std::future::pending().await,
        }
    }

    /// The transport-ups already sent, as inputs.
    pub(crate) fn sent(&mut self) -> Vec<Input> {
        let mut inputs = Vec::new();
        while let Ok((id, at)) = self.rx.try_recv() {
            inputs.push(Input::TransportUp(id, at));
        }
        inputs
    }
}

impl<F, Fut> Attempts<F>
where
    F: Fn(Endpoint, Arc<ConnectConfig>, ProgressFn) -> Fut,
    Fut: Future<Output = Result<Connected, AttemptError>> + Send + 'static,
{
    /// The attempts, and their transport-ups (kept apart so that a
    /// `select!` can wait on both).
    pub(crate) fn new(run: F, connect: Arc<ConnectConfig>) -> (Self, TransportUps) {
        let (progress_tx, rx) = mpsc::unbounded_channel();
        let ups = TransportUps {
            rx,
            _tx: progress_tx.clone(),
        };
        let attempts = Attempts {
            run,
            connect,
            tasks: TaskSet::new(),
            progress_tx,
        };
        (attempts, ups)
    }

    pub(crate) fn start(&mut self, id: AttemptId, endpoint: Endpoint) {
        tracing::debug!(attempt = id.0, %endpoint, "starting attempt");
        let transport_up = Arc::new(OnceLock::new());
        let progress: ProgressFn = {
            let (transport_up, progress_tx) = (transport_up.clone(), self.progress_tx.clone());
            Box::new(move |p: Progress| match p {
                Progress::TransportUp { .. } => {
                    let at = tokio::time::Instant::now().into_std();
                    if transport_up.set(at).is_ok() {
                        let _ = progress_tx.send((id, at));
                    }
                }
            })
        };
        let attempt = (self.run)(endpoint, self.connect.clone(), progress);
        self.tasks.spawn(id, async move {
            let result = attempt.await;
            (transport_up.get().copied(), result)
        });
    }

    /// Aborts the attempt; dropping its future closes its socket.
    pub(crate) fn cancel(&mut self, id: AttemptId) {
        tracing::debug!(attempt = id.0, "cancelling attempt");
        self.tasks.abort(id);
    }

    /// The next attempt to end. A bug in an attempt (a panic) fails that
    /// attempt rather than holding its slot until the deadline. Cancel-safe;
    /// pending for ever while no attempt runs.
    pub(crate) async fn ended(&mut self) -> AttemptEnded {
        let (id, joined) = self.tasks.next().await;
        let (transport_up, result) = joined.unwrap_or_else(|panic| {
            let detail = format!("the attempt panicked: {panic}");
            (None, Err(AttemptError::new(ErrorClass::Local, detail)))
        });
        let mut inputs: Vec<Input> = transport_up
            .map(|at| Input::TransportUp(id, at))
            .into_iter()
            .collect();
        let connected = match result {
            Ok(connected) => {
                inputs.push(Input::Succeeded(id));
                Some((id, connected))
            }
            Err(err) => {
                inputs.push(Input::Failed(id, err));
                None
            }
        };
        AttemptEnded { inputs, connected }
    }

    /// Aborts every attempt still running and waits until each has ended,
    /// so no socket outlives the dial.
    pub(crate) async fn close(&mut self) {
        self.tasks.close().await;
    }
}
