//! Background work as workers: a small struct whose `step()` does one
//! bounded piece of work and says what comes next (`Step`), driven by one
//! runner (`Workers`) that owns the stop signal and an exit deadline. The
//! runner does the waiting between steps, so a worker holds no loop of its
//! own, and a test can step one by hand (under paused time) and look at
//! the outcome. On stop, each worker gets one last `step` in which
//! `stopping()` is true (to flush what it holds); one that has not ended by
//! the deadline is named in the log and cut off. Nothing is lost by that:
//! durable state is in the store, and every queue resumes from it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// What one step did, and when the worker wants the next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// There is more to do now: step again at once.
    Busy,
    /// Nothing to do until its wake-up is notified or, when given, until
    /// that time, whichever comes first.
    Idle(Option<Instant>),
    /// Finished, with its outcome; the worker is not stepped again.
    Done(T),
}

/// A worker: `step` does a bounded piece of work. A step that waits on
/// something outside (a peer's stream, say) also ends when `stop` says so.
pub trait Worker: Send + 'static {
    type Output: Send + 'static;
    /// What the log calls it ("inbound processor", "dispatcher for `hub`").
    fn name(&self) -> String;
    fn step(&mut self) -> impl Future<Output = Step<Self::Output>> + Send;
}

/// Longest wait for all workers to end after stop.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// The runner: starts workers, tells them to stop, and waits for them.
/// Cloning gives another handle to the same runner.
#[derive(Clone)]
pub struct Workers {
    stop_tx: Arc<watch::Sender<bool>>,
    stop: watch::Receiver<bool>,
    live: Arc<Mutex<Live>>,
    exited: Arc<Notify>,
}

#[derive(Default)]
struct Live {
    next_id: u64,
    tasks: HashMap<u64, (String, tokio::task::AbortHandle)>,
}

/// Removes a finished (or cut off) worker from the live list.
struct Exit {
    id: u64,
    live: Arc<Mutex<Live>>,
    exited: Arc<Notify>,
}

impl Drop for Exit {
    fn drop(&mut self) {
        self.live
            .lock()
            .expect("worker list")
            .tasks
            .remove(&self.id);
        self.exited.notify_waiters();
    }
}

impl Default for Workers {
    fn default() -> Self {
        Workers::new()
    }
}

impl Workers {
    pub fn new() -> Workers {
        let (stop_tx, stop) = watch::channel(false);
        Workers {
            stop_tx: Arc::new(stop_tx),
            stop,
            live: Arc::default(),
            exited: Arc::new(Notify::new()),
        }
    }

    /// The stop signal, for steps that wait on something outside.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Runs `worker` until it is done or stopped, waking it on `wake`; the
    /// handle gives its outcome (`None` when stopped before it was done).
    pub fn spawn<W: Worker>(
        &self,
        worker: W,
        wake: Arc<Notify>,
    ) -> tokio::task::JoinHandle<Option<W::Output>> {
        let name = worker.name();
        let mut live = self.live.lock().expect("worker list");
        live.next_id += 1;
        let id = live.next_id;
        let exit = Exit {
            id,
            live: self.live.clone(),
            exited: self.exited.clone(),
        };
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            let _exit = exit;
            drive(worker, &wake, stop).await
        });
        live.tasks.insert(id, (name, task.abort_handle()));
        task
    }

    /// Keeps one worker per name of `names` in `running`: the ones whose
    /// name is gone (or that ended) are cut off, and `make(name)` starts
    /// one for each new name, woken on `wake`.
    pub fn keep_one_per_name<W: Worker>(
        &self,
        running: &mut std::collections::HashMap<String, tokio::task::JoinHandle<Option<W::Output>>>,
        names: std::collections::BTreeSet<String>,
        wake: &Arc<Notify>,
        make: impl Fn(&str) -> W,
    ) {
        running.retain(|name, task| {
            let keep = names.contains(name) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for name in names {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(name) {
                let worker = make(slot.key());
                slot.insert(self.spawn(worker, wake.clone()));
            }
        }
    }

    /// Tells every worker to stop and waits up to `deadline` for them to
    /// end; the ones still running then are named in the log and cut off.
    /// Returns their names.
    pub async fn stop(&self, deadline: Duration) -> Vec<String> {
        let _ = self.stop_tx.send(true);
        let until = Instant::now() + deadline;
        loop {
            let exited = self.exited.notified();
            if self.live.lock().expect("worker list").tasks.is_empty() {
                return Vec::new();
            }
            if tokio::time::timeout_at(until, exited).await.is_err() {
                break;
            }
        }
        let late: Vec<(String, tokio::task::AbortHandle)> = self
            .live
            .lock()
            .expect("worker list")
            .tasks
            .drain()
            .map(|(_, task)| task)
            .collect();
        let mut names = Vec::new();
        for (name, task) in late {
            tracing::warn!(target: "server", worker = %name, deadline_s = deadline.as_secs(), "A worker did not stop within the exit deadline and was cut off; what it held is resumed from the store at the next start.");
            task.abort();
            names.push(name);
        }
        names.sort();
        names
    }
}

/// Completes once `stop` says stop (at once if it already has): for a
/// step's `select!` on something outside. Unlike `changed()`, it does not
/// miss a stop sent before it was called.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // The runner is gone without a stop: nothing will stop us.
            std::future::pending::<()>().await;
        }
    }
}

/// Steps `worker` until it is done; waits between steps as it asks. After
/// stop it is stepped once more, with `stop` already set.
async fn drive<W: Worker>(
    mut worker: W,
    wake: &Notify,
    mut stop: watch::Receiver<bool>,
) -> Option<W::Output> {
    loop {
        let stopping = *stop.borrow();
        // Listening for the wake-up before the step: one that comes while
        // it runs is not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match worker.step().await {
            Step::Done(output) => return Some(output),
            _ if stopping => return None,
            Step::Busy => {}
            Step::Idle(until) => {
                let sleep = async {
                    match until {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = woken => {}
                    () = sleep => {}
                    () = stopped(&mut stop) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts to `to`, one per step, idling a second between counts.
    struct Counter {
        at: u32,
        to: u32,
        stepped_after_stop: Arc<std::sync::atomic::AtomicBool>,
        stop: watch::Receiver<bool>,
    }

    impl Worker for Counter {
        type Output = u32;
        fn name(&self) -> String {
            "counter".to_string()
        }
        async fn step(&mut self) -> Step<u32> {
            if *self.stop.borrow() {
                self.stepped_after_stop
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            self.at += 1;
            if self.at == self.to {
                return Step::Done(self.at);
            }
            Step::Idle(Some(Instant::now() + Duration::from_secs(1)))
        }
    }

    /// Never ends a step.
    struct Stuck;

    impl Worker for Stuck {
        type Output = ();
        fn name(&self) -> String {
            "stuck worker".to_string()
        }
        async fn step(&mut self) -> Step<()> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_is_stepped_as_it_asks_and_its_outcome_returned() {
        let workers = Workers::new();
        let started = Instant::now();
        let counter = Counter {
            at: 0,
            to: 5,
            stepped_after_stop: Arc::default(),
            stop: workers.stop_signal(),
        };
        let done = workers.spawn(counter, Arc::new(Notify::new()));
        assert_eq!(done.await.unwrap(), Some(5));
        // Four idle seconds between five steps, on paused time.
        assert_eq!(started.elapsed().as_secs(), 4);
        assert!(workers.stop(EXIT_DEADLINE).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_cuts_an_idle_wait_short() {
        let workers = Workers::new();
        let wake = Arc::new(Notify::new());
        let started = Instant::now();
        let counter = Counter {
            at: 0,
            to: 3,
            stepped_after_stop: Arc::default(),
            stop: workers.stop_signal(),
        };
        let done = workers.spawn(counter, wake.clone());
        for _ in 0..2 {
            tokio::task::yield_now().await;
            wake.notify_one();
        }
        assert_eq!(done.await.unwrap(), Some(3));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn on_stop_each_worker_steps_once_more_and_a_late_one_is_named() {
        let workers = Workers::new();
        let stepped_after_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counter = Counter {
            at: 0,
            to: 1000,
            stepped_after_stop: stepped_after_stop.clone(),
            stop: workers.stop_signal(),
        };
        let counting = workers.spawn(counter, Arc::new(Notify::new()));
        let stuck = workers.spawn(Stuck, Arc::new(Notify::new()));
        tokio::task::yield_now().await;
        let started = Instant::now();
        let late = workers.stop(EXIT_DEADLINE).await;
        assert_eq!(late, vec!["stuck worker".to_string()]);
        assert_eq!(started.elapsed(), EXIT_DEADLINE);
        assert_eq!(counting.await.unwrap(), None, "stopped before it was done");
        assert!(stepped_after_stop.load(std::sync::atomic::Ordering::SeqCst));
        assert!(stuck.await.unwrap_err().is_cancelled());
    }
}
