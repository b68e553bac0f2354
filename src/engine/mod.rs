//! The one thread that owns the state: messages and task results come in
//! on a channel, go through the policy, and become rows in the store; due
//! tasks go out to the tokio runtime. Owning the store on one thread makes
//! every decision atomic without locks; with several instances on one
//! PostgreSQL store, the store's unique keys and claims (see `store`) keep
//! their decisions apart.
//!
//! - here: the loop, dispatching due work, housekeeping
//! - `on_message`: what a bus message does
//! - `on_result`: what a task's answer does

mod on_message;
mod on_result;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::policy;
use crate::event::Message;
use crate::http::PeerError;
use crate::pagure::Flag;
use crate::store::{Run, Store, Task};
use crate::web;
use crate::work::Work;
use crate::worker::{self, Peers, TaskResult};

/// Tasks in flight at most; the per-peer limits apply inside.
const MAX_IN_FLIGHT: usize = 256;
/// Inputs handled in one store transaction at most.
const BATCH: usize = 512;
/// Follows have no retry deadline of their own: the queue and build timeouts end them.
const NEVER: f64 = 1e15;
/// Messages kept in memory at most while the store cannot record them.
const MAX_UNRECORDED: usize = 10_000;

/// A message the store could not record yet, kept to be tried again.
#[derive(Clone)]
struct Unrecorded {
    msg: Message,
    recorded: Option<Sender<()>>,
    since: f64,
}

/// What to keep of an input whose statements failed, to try it again.
enum Retry {
    Message(Unrecorded),
    Answer(Input),
    Nothing,
}

#[derive(Clone)]
pub enum Input {
    Message(Message),
    /// A message whose sender waits until the store has recorded it (the
    /// AMQP callback acknowledges it then): `recorded` gets `()` after the
    /// commit, or is dropped if poormanci stops first.
    Record { msg: Message, recorded: Sender<()> },
    Done { task: i64, result: TaskResult },
    /// One look at Jenkins for many follows (`worker::poll`), and its cost in requests.
    Polled { results: Vec<(i64, TaskResult)>, requests: usize },
    Explain(Message, Sender<Vec<String>>),
    /// Answers true when no task is running or due.
    Idle(Sender<bool>),
    /// Stop dispatching; leave once the tasks in flight are done or at the deadline.
    Close(Instant),
}

pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

pub struct Engine {
    cfg: Arc<Config>,
    store: Store,
    /// None in dry-run: decisions are recorded, nothing is sent.
    peers: Option<Arc<Peers>>,
    rt: Handle,
    tx: SyncSender<Input>,
    /// Task ids in flight: claimed in the store by this instance (see
    /// `Store::claim`), their claims renewed while they run.
    in_flight: HashSet<i64>,
    /// The follows among them (one look at Jenkins answers for many).
    following: HashSet<i64>,
    last_renewal: f64,
    /// Task answers handled in a batch whose commit failed: handled again.
    answers_again: Vec<Input>,
    closing: Option<Instant>,
    last_prune: f64,
    /// Requests the last look at Jenkins took: the next is spaced by it.
    poll_requests: usize,
    /// Follows nudged by a bus message while their look was in flight.
    look_again: HashSet<i64>,
    /// Jobs already warned about for not defining COMMIT.
    warned_no_commit: HashSet<String>,
    /// Runs cleared to go while handling the current input, with the people
    /// who vouched for them: confirmed with Pagure together, one GET per PR.
    to_confirm: Vec<(i64, Vec<String>)>,
    /// Messages the store could not record (disk full, locked, read-only):
    /// kept, oldest first, and tried again before newer ones.
    unrecorded: std::collections::VecDeque<Unrecorded>,
    /// The messages of the current batch, kept until its commit lands.
    in_batch: Vec<Unrecorded>,
    /// Some work waits for a working Pagure token (401, 403).
    token_held: bool,
    /// (project, kind of task) Pagure refused, already said at WARNING.
    refused: HashSet<(String, &'static str)>,
}

impl Engine {
    pub fn new(cfg: Arc<Config>, store: Store, peers: Option<Arc<Peers>>, rt: Handle, tx: SyncSender<Input>) -> Engine {
        Engine {
            cfg,
            store,
            peers,
            rt,
            tx,
            in_flight: HashSet::new(),
            following: HashSet::new(),
            last_renewal: 0.0,
            answers_again: Vec::new(),
            closing: None,
            last_prune: 0.0,
            poll_requests: 1,
            look_again: HashSet::new(),
            warned_no_commit: HashSet::new(),
            to_confirm: Vec::new(),
            unrecorded: Default::default(),
            in_batch: Vec::new(),
            token_held: false,
            refused: HashSet::new(),
        }
    }

    pub fn run(mut self, rx: Receiver<Input>) {
        if self.peers.is_some() {
            // The token may have been fixed while poormanci was stopped.
            match self.store.wake_held(now()) {
                Ok(0) => {}
                Ok(n) => {
                    info!("{n} request(s) kept for a working Pagure token: trying them now");
                    self.token_held = true;
                }
                Err(e) => error!("state store: cannot wake the work kept for a token: {e}"),
            }
        }
        loop {
            let wait = self.next_wakeup();
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(input) => batch.push(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(input) => batch.push(input),
                    Err(_) => break,
                }
            }
            // Answers and messages kept earlier go first: they waited longest.
            let mut batch: Vec<Input> = self.answers_again.drain(..).chain(batch).collect();
            let kept: Vec<Unrecorded> = self.unrecorded.drain(..).collect();
            if let Err(e) = self.store.begin() {
                let why = format!("cannot start a transaction: {e}");
                web::metrics::heartbeat(Err(e.to_string()));
                for u in kept {
                    self.keep(u, &why);
                }
                self.cannot_record(batch, &why);
                continue;
            }
            for u in kept {
                self.isolated(Retry::Message(u.clone()), |engine| {
                    engine.recorded_message(u);
                    engine.ask_pagure_to_confirm(now());
                });
            }
            let mut answers = Vec::new();
            for input in batch.drain(..) {
                let retry = match &input {
                    // Kept, to be handled again if this transaction does not land.
                    Input::Done { task, result } => Retry::Answer(Input::Done { task: *task, result: result.clone() }),
                    Input::Polled { results, requests } => Retry::Answer(Input::Polled { results: results.clone(), requests: *requests }),
                    Input::Message(msg) => Retry::Message(Unrecorded { msg: msg.clone(), recorded: None, since: 0.0 }),
                    Input::Record { msg, recorded } => Retry::Message(Unrecorded { msg: msg.clone(), recorded: Some(recorded.clone()), since: 0.0 }),
                    Input::Explain(..) | Input::Idle(_) | Input::Close(_) => Retry::Nothing,
                };
                if let Retry::Answer(answer) = &retry {
                    answers.push(answer.clone());
                }
                self.isolated(retry, |engine| engine.input(input));
            }
            let committed = self.store.commit();
            web::metrics::heartbeat(committed.as_ref().map_err(|e| e.to_string()).copied());
            match committed {
                Ok(()) => {
                    for u in self.in_batch.drain(..) {
                        if u.since > 0.0 {
                            info!("msg {} {}: recorded after waiting {:.0} s", u.msg.msg_id.as_deref().unwrap_or("-"), u.msg.topic, now() - u.since);
                        }
                        if let Some(recorded) = u.recorded {
                            let _ = recorded.send(());
                        }
                    }
                }
                Err(e) => {
                    let _ = self.store.rollback();
                    // What the answers did is undone; their tasks are still
                    // claimed by this instance: handle them again.
                    for answer in &answers {
                        let tasks: Vec<i64> = match answer {
                            Input::Done { task, .. } => vec![*task],
                            Input::Polled { results, .. } => results.iter().map(|(t, _)| *t).collect(),
                            _ => Vec::new(),
                        };
                        self.in_flight.extend(tasks);
                    }
                    self.answers_again = answers;
                    let kept: Vec<Unrecorded> = self.in_batch.drain(..).collect();
                    let why = format!("cannot commit: {e}");
                    for u in kept {
                        self.keep(u, &why);
                    }
                    continue;
                }
            }
            if let Some(deadline) = self.closing {
                if self.in_flight.is_empty() || Instant::now() >= deadline {
                    // Work claimed and not done goes back at once, not at the end of its lease.
                    if let Err(e) = self.store.release_claims(now()) {
                        warn!("state store: cannot give back the claimed tasks: {e}; they go again when their lease ends");
                    }
                    return;
                }
                continue;
            }
            self.housekeeping();
            self.dispatch();
        }
    }

    fn next_wakeup(&self) -> Duration {
        if self.closing.is_some() {
            return Duration::from_millis(50);
        }
        if !self.answers_again.is_empty() {
            // Answers the store refused: again soon, not in a busy loop.
            return Duration::from_millis(200);
        }
        let next = self.store.next_due().ok().flatten().unwrap_or(f64::MAX);
        Duration::from_secs_f64((next - now()).clamp(0.005, 1.0))
    }

    /// Handle one input in the batch's transaction, alone: on PostgreSQL a
    /// failed statement aborts the whole transaction, so each input has a
    /// savepoint, and an input one of whose statements failed is undone
    /// and kept to be tried again, without the others. A bug (a panic)
    /// costs one input, never the engine thread.
    fn isolated(&mut self, retry: Retry, handle: impl FnOnce(&mut Engine)) {
        let marked = self.store.savepoint();
        let (recorded_before, kept_before) = (self.in_batch.len(), self.unrecorded.len());
        if catch_unwind(AssertUnwindSafe(|| handle(self))).is_err() {
            error!("internal error while handling an input; it was dropped (see the panic message above)");
        }
        if marked.is_err() || self.store.release_savepoint().is_ok() {
            return;
        }
        let _ = self.store.rollback_to_savepoint();
        self.in_batch.truncate(recorded_before);
        match retry {
            Retry::Message(_) if self.unrecorded.len() > kept_before => {} // kept already
            Retry::Message(u) => self.keep(u, "could not record it (see the line above)"),
            Retry::Answer(answer) => {
                if let Input::Done { task, .. } = &answer {
                    self.in_flight.insert(*task);
                }
                if let Input::Polled { results, .. } = &answer {
                    self.in_flight.extend(results.iter().map(|(t, _)| *t));
                }
                self.answers_again.push(answer);
            }
            Retry::Nothing => {}
        }
    }

    fn input(&mut self, input: Input) {
        self.handle(input);
        self.ask_pagure_to_confirm(now());
    }

    /// Handle a message, kept (with whoever waits for it) until the batch's
    /// commit lands; kept for later if the store cannot record it.
    fn recorded_message(&mut self, u: Unrecorded) {
        let copy = u.msg.clone();
        match self.message(u.msg) {
            Ok(()) => self.in_batch.push(Unrecorded { msg: copy, ..u }),
            Err(why) => self.keep(Unrecorded { msg: copy, ..u }, &why),
        }
    }

    /// The store cannot take this batch at all: its messages wait in memory;
    /// task answers wait too.
    fn cannot_record(&mut self, batch: Vec<Input>, why: &str) {
        for input in batch {
            match input {
                Input::Message(msg) => self.keep(Unrecorded { msg, recorded: None, since: 0.0 }, why),
                Input::Record { msg, recorded } => self.keep(Unrecorded { msg, recorded: Some(recorded), since: 0.0 }, why),
                // Handled once the store works again.
                answer @ (Input::Done { .. } | Input::Polled { .. }) => self.answers_again.push(answer),
                other => self.handle(other),
            }
        }
        // Not a busy loop: a locked store already made begin() wait.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Keep a message the store could not record, to try again; said once
    /// per message, naming it.
    fn keep(&mut self, mut u: Unrecorded, why: &str) {
        let (id, topic) = (u.msg.msg_id.clone().unwrap_or_else(|| "-".into()), u.msg.topic.clone());
        if self.unrecorded.len() >= MAX_UNRECORDED {
            return error!("msg {id} {topic}: dropped: the state store {why}, and {MAX_UNRECORDED} messages already wait in memory");
        }
        if u.since == 0.0 {
            warn!("msg {id} {topic}: waits in memory until the state store can record it: {why}");
            u.since = now();
        }
        self.unrecorded.push_back(u);
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Message(msg) => self.recorded_message(Unrecorded { msg, recorded: None, since: 0.0 }),
            Input::Record { msg, recorded } => self.recorded_message(Unrecorded { msg, recorded: Some(recorded), since: 0.0 }),
            Input::Done { task, result } => self.done(task, result),
            Input::Polled { results, requests } => {
                self.poll_requests = requests;
                for (task, result) in results {
                    self.done(task, result);
                    if !matches!(self.store.task(task), Ok(Some(_))) {
                        self.look_again.remove(&task);
                    }
                }
            }
            Input::Explain(msg, reply) => {
                let _ = reply.send(self.explain(&msg));
            }
            Input::Idle(reply) => {
                let due = self.store.any_due(now()).unwrap_or(false);
                let _ = reply.send(self.in_flight.is_empty() && self.answers_again.is_empty() && !due);
            }
            Input::Close(deadline) => self.closing = Some(deadline),
        }
    }

    fn housekeeping(&mut self) {
        let t = now();
        // Claims of tasks in flight outlive a slow peer; a third of the
        // lease leaves room for a slow store.
        if t - self.last_renewal > self.cfg.store.lease.as_secs_f64() / 3.0 {
            self.last_renewal = t;
            let tasks: Vec<i64> = self.in_flight.iter().copied().collect();
            if let Err(e) = self.store.renew(&tasks, t) {
                warn!("state store: cannot renew the claims on {} task(s) in flight: {e}", tasks.len());
            }
        }
        if t - self.last_prune > 3600.0 {
            self.last_prune = t;
            if let Err(e) = self.store.prune(t, self.cfg.web.keep_runs_secs()) {
                warn!("state store: pruning failed: {e}");
            }
        }
    }

    // ---- recording work ---------------------------------------------------

    /// Record work for a run, to be tried until the retry deadline.
    fn add_work(&mut self, run: i64, work: Work, t: f64) {
        let deadline = t + self.cfg.retry_deadline.as_secs_f64();
        self.add_task(run, work, t, deadline);
    }

    fn add_task(&mut self, run: i64, work: Work, due: f64, deadline: f64) {
        if let Err(e) = self.store.add_task(run, &work, due, deadline) {
            error!("state store: cannot record a {} for run {run}: {e}", work.kind());
        }
    }

    fn add_flag(&mut self, run: &Run, flag: Flag) {
        // The newest flag for a PR and job replaces any not yet sent (one
        // in flight, here or elsewhere, is let be: the new one goes after it).
        let t = now();
        if let Err(e) = self.store.delete_unclaimed_of_pr(&run.project, run.pr, &run.job, Work::FLAG, t) {
            warn!("state store: cannot drop the older flags of {}#{} {}: {e}", run.project, run.pr, run.job);
        }
        self.add_work(run.id, Work::Flag(flag), t);
    }

    /// A flag task for the same PR and job recorded after this one.
    fn newer_flag(&self, task: &Task, run: &Run) -> bool {
        self.store.tasks_of_pr(&run.project, run.pr, &run.job, Work::FLAG).unwrap_or_default().iter().any(|&t| t > task.id)
    }

    // ---- sending work -----------------------------------------------------

    /// Claim the due tasks (no other instance takes them while this one
    /// works on them) and send them; follows go by job, in one look each.
    fn dispatch(&mut self) {
        let Some(peers) = self.peers.clone() else { return };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        // Claim no more than the peers' limits let this instance send at
        // once: claimed tasks are this instance's until their lease ends, and
        // the other instances take what is left.
        let sending = self.in_flight.len() - self.following.len();
        let room = (self.cfg.jenkins.peer.concurrency + self.cfg.pagure.peer.concurrency).min(MAX_IN_FLIGHT).saturating_sub(sending);
        if room == 0 {
            return;
        }
        let t = now();
        let due = match self.store.claim(t, room, None, None) {
            Ok(due) => due,
            Err(e) => return error!("state store: cannot claim due tasks: {e}"),
        };
        let mut due_jobs = HashSet::new();
        let mut follows = Vec::new();
        for task in due {
            let run = match self.store.run(task.run) {
                Ok(Some(run)) => run,
                _ => {
                    let _ = self.store.delete_task(task.id);
                    continue;
                }
            };
            if matches!(task.work, Work::Follow { .. }) {
                due_jobs.insert(run.job.clone());
                follows.push((task.id, run));
                continue;
            }
            if task.work == Work::Cancel && !self.may_withdraw(&run) {
                let _ = self.store.delete_task(task.id);
                continue;
            }
            if let Work::Comment { text, tried: false } = &task.work {
                // Recorded (autocommit) before the POST: a comment that may
                // have reached Pagure is looked for before it is sent again.
                let _ = self.store.set_work(task.id, &Work::Comment { text: text.clone(), tried: true });
            }
            self.in_flight.insert(task.id);
            let (cfg, peers, tx, id) = (self.cfg.clone(), peers.clone(), self.tx.clone(), task.id);
            let job = self.rt.spawn(worker::execute(cfg, peers, task, run));
            // A second task reports back even if the first one panicked.
            self.rt.spawn(async move {
                let result = job.await.unwrap_or_else(|e| TaskResult::Failed(PeerError::Fatal(format!("internal error: {e}"))));
                let _ = tx.send(Input::Done { task: id, result });
            });
        }
        if !due_jobs.is_empty() {
            self.poll(peers, due_jobs, follows, t);
        }
    }

    /// Look at the jobs with a follow due, once each: every follow of those
    /// jobs goes along (one request answers for all of a job's builds), and
    /// so do follows due a moment later, so that follows keep one rhythm
    /// and the queue is read once for all of them.
    fn poll(&mut self, peers: Arc<Peers>, due_jobs: HashSet<String>, mut follows: Vec<(i64, Run)>, t: f64) {
        let soon = t + self.cfg.jenkins.poll_interval.as_secs_f64() / 4.0;
        let jobs: Vec<String> = due_jobs.into_iter().collect();
        for task in self.store.claim(soon, MAX_IN_FLIGHT, Some(Work::FOLLOW), Some(&jobs)).unwrap_or_default() {
            if let Ok(Some(run)) = self.store.run(task.run) {
                follows.push((task.id, run));
            }
        }
        for (id, _) in &follows {
            self.in_flight.insert(*id);
            self.following.insert(*id);
        }
        let tx = self.tx.clone();
        self.rt.spawn(async move {
            let (results, requests) = worker::poll(peers, follows).await;
            let _ = tx.send(Input::Polled { results, requests });
        });
    }

    /// When a new follow first looks: with the others, when they look
    /// within a poll interval, so that a job is read once for all its builds.
    fn first_look(&self, t: f64) -> f64 {
        let interval = self.cfg.jenkins.poll_interval.as_secs_f64();
        let next = self.store.tasks_of_kind(Work::FOLLOW).unwrap_or_default().iter().map(|task| task.due).filter(|&due| due > t).fold(f64::MAX, f64::min);
        if next <= t + interval {
            next
        } else {
            t + interval
        }
    }

    /// A cancel takes a queue item or build out of Jenkins: never one that
    /// another open run shares (Jenkins merged its trigger into it).
    fn may_withdraw(&self, run: &Run) -> bool {
        let Some(q) = run.queue_id else { return true };
        let sharing = self.store.open_runs_sharing(&run.job, q, run.id).unwrap_or_default();
        match policy::withdraw(&sharing) {
            policy::Withdraw::Go => true,
            policy::Withdraw::Keep { for_run } => {
                info!("run {} ({} for {}#{}): not cancelled in Jenkins: queue item {q} is also run {for_run}'s", run.id, run.job, run.project, run.pr);
                false
            }
        }
    }

    fn job_url(&self, job: &str) -> String {
        crate::jenkins::job_url(&self.cfg.jenkins.peer.url, job)
    }
}

/// What `poormanci status` shows, read while a hub may be running.
pub fn status_of(dir: &std::path::Path) -> Result<Value, String> {
    let store = Store::open_read_only(dir).map_err(|e| format!("cannot read the state store in {}: {e}", dir.display()))?;
    store.status().map_err(|e| format!("cannot read the state store in {}: {e}", dir.display()))
}
