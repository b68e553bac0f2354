//! The one thread that owns the state: messages and task results come in
//! on a channel, go through the policy, and become rows in the store; due
//! tasks go out to the tokio runtime. Owning the store on one thread makes
//! every decision atomic without locks.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::runtime::Handle;

use crate::config::Config;
use crate::event::Message;
use crate::http::PeerError;
use crate::jenkins::QueueState;
use crate::policy::{self, Command, Decision, FlagReport, Head, Outcome, RunSpec};
use crate::store::{Run, Store, Task};
use crate::web;
use crate::worker::{self, Peers, TaskResult};

/// Tasks in flight at most; the per-peer limits apply inside.
const MAX_IN_FLIGHT: usize = 256;
/// Inputs handled in one store transaction at most.
const BATCH: usize = 512;
/// Follows have no retry deadline of their own: the queue and build timeouts end them.
const NEVER: f64 = 1e15;

pub enum Input {
    Message(Message),
    Done { task: i64, result: TaskResult },
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
    /// Task ids in flight, with the key that serializes them (one flag
    /// request at a time per PR and job, so an old pending cannot land last).
    in_flight: HashMap<i64, Option<String>>,
    busy_keys: HashSet<String>,
    closing: Option<Instant>,
    last_prune: f64,
}

impl Engine {
    pub fn new(cfg: Arc<Config>, store: Store, peers: Option<Arc<Peers>>, rt: Handle, tx: SyncSender<Input>) -> Engine {
        Engine { cfg, store, peers, rt, tx, in_flight: HashMap::new(), busy_keys: HashSet::new(), closing: None, last_prune: 0.0 }
    }

    pub fn run(mut self, rx: Receiver<Input>) {
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
            let begun = self.store.begin();
            if let Err(e) = &begun {
                error!("state store: cannot start a transaction: {e}");
            }
            for input in batch {
                // A bug must cost one input, never the engine thread.
                if catch_unwind(AssertUnwindSafe(|| self.input(input))).is_err() {
                    error!("internal error while handling an input; it was dropped (see the panic message above)");
                }
            }
            let committed = self.store.commit();
            if let Err(e) = &committed {
                error!("state store: cannot commit: {e}");
            }
            web::metrics::heartbeat(begun.and(committed).map_err(|e| e.to_string()));
            if let Some(deadline) = self.closing {
                if self.in_flight.is_empty() || Instant::now() >= deadline {
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
        let next = self.store.next_due().ok().flatten().unwrap_or(f64::MAX);
        Duration::from_secs_f64((next - now()).clamp(0.005, 1.0))
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Message(msg) => self.message(msg),
            Input::Done { task, result } => self.done(task, result),
            Input::Explain(msg, reply) => {
                let _ = reply.send(self.explain(&msg));
            }
            Input::Idle(reply) => {
                let due = self.store.next_due().ok().flatten().is_some_and(|d| d <= now());
                let _ = reply.send(self.in_flight.is_empty() && !due);
            }
            Input::Close(deadline) => self.closing = Some(deadline),
        }
    }

    fn housekeeping(&mut self) {
        let t = now();
        if t - self.last_prune > 3600.0 {
            self.last_prune = t;
            if let Err(e) = self.store.prune(t, self.cfg.web.keep_runs_secs()) {
                warn!("state store: pruning failed: {e}");
            }
        }
    }

    // ---- messages -------------------------------------------------------

    fn message(&mut self, msg: Message) {
        let id = msg.msg_id.as_deref().unwrap_or("-");
        let t = now();
        if let Some(msg_id) = &msg.msg_id {
            match self.store.first_sight(msg_id, t) {
                Ok(true) => {}
                Ok(false) => {
                    web::metrics::message_duplicate();
                    return debug!("msg {id} {}: ignored: already handled (same msg_id)", msg.topic);
                }
                Err(e) => return error!("msg {id} {}: dropped: state store: {e}", msg.topic),
            }
        }
        let decision = policy::decide(&self.cfg, &msg, &self.store);
        web::metrics::message_decided(&decision);
        web::history::pull_request(&self.store, &self.cfg, &msg, t);
        match decision {
            Decision::Ignore(why) => debug!("msg {id} {}: ignored: {why}", msg.topic),
            Decision::Refuse(why) => warn!("msg {id} {}: refused: {why}", msg.topic),
            Decision::Trigger { runs, author } => self.start_runs(id, &msg.topic, runs, &author, t),
            Decision::Commands { commands, user, spec } => self.commands(id, &msg.topic, commands, &user, spec, t),
            Decision::BuildFinished { jobs, number } => self.build_finished(id, &msg.topic, &jobs, number),
        }
    }

    /// New runs for a PR's commit: started when the author is trusted by the
    /// config or the PR was approved; otherwise gated until Pagure (or a
    /// trusted person's `/ok-to-test`) says so.
    fn start_runs(&mut self, id: &str, topic: &str, specs: Vec<RunSpec>, author: &str, t: f64) {
        let Some(first) = specs.first().cloned() else { return };
        let cfg = self.cfg.clone();
        let trust = cfg.trust(&first.project);
        let go = policy::trusted_by_config(trust, author) || self.store.approved(&first.project, first.pr).unwrap_or(false);
        let mut anchor = None;
        for spec in specs {
            match self.store.add_run(&spec, if go { "triggering" } else { "gated" }, t) {
                Ok(run) => {
                    let verb = if go { "trigger" } else { "gate" };
                    info!("msg {id} {topic}: {verb} {} for {}#{} by {author} at {} (run {run})", spec.job, spec.project, spec.pr, policy::short(spec.commit.as_deref()));
                    web::history::reason(&self.store, run, &web::history::reason_of_topic(topic, author));
                    if go {
                        self.trigger(run, t);
                    } else {
                        self.supersede(run, t);
                    }
                    anchor.get_or_insert(run);
                }
                Err(e) => error!("msg {id}: cannot record a run of {} for {}#{}: {e}", spec.job, spec.project, spec.pr),
            }
        }
        match anchor {
            Some(run) if !go && policy::trust_needs_pagure(trust) => {
                self.add_task(run, "trust", json!({"user": author, "then": "release"}), t, t + self.cfg.retry_deadline.as_secs_f64());
            }
            Some(_) if !go => self.hold(&first.project, first.pr, t),
            _ => {}
        }
    }

    fn trigger(&mut self, run: i64, t: f64) {
        // Older builds are cancelled first: Jenkins would merge this trigger
        // into an older one still waiting with the same parameters.
        self.supersede(run, t);
        self.add_task(run, "trigger", json!({}), t, t + self.cfg.retry_deadline.as_secs_f64());
    }

    /// A newer run of a PR and job ends the older ones: gated ones simply,
    /// queued or running ones cancelled in Jenkins (when configured).
    fn supersede(&mut self, newer: i64, t: f64) {
        let Ok(Some(new)) = self.store.run(newer) else { return };
        for old in self.store.open_runs_of_pr(&new.project, new.pr).unwrap_or_default() {
            if old.job != new.job || old.id >= new.id || (old.commit == new.commit && old.state != "gated") {
                continue;
            }
            if old.state != "gated" {
                if !self.cfg.jenkins.cancel_superseded {
                    continue;
                }
                info!("run {} ({} for {}#{}): superseded by run {newer}; cancelling it in Jenkins", old.id, old.job, old.project, old.pr);
                self.add_task(old.id, "cancel", json!({}), t, t + self.cfg.retry_deadline.as_secs_f64());
            }
            self.finish(&old, Outcome::Superseded, t);
        }
    }

    /// The latest gated run of each job of a PR may go.
    fn release(&mut self, project: &str, pr: u64, t: f64) {
        for run in self.latest_gated(project, pr) {
            if self.store.release(run.id).unwrap_or(false) {
                info!("run {} ({} for {}#{}): approved, triggering", run.id, run.job, run.project, run.pr);
                self.trigger(run.id, t);
            }
        }
    }

    /// Gated runs wait for a trusted person: say so on the PR, once.
    fn hold(&mut self, project: &str, pr: u64, t: f64) {
        let gated = self.latest_gated(project, pr);
        let Some(first) = gated.first() else { return };
        info!("{project}#{pr}: the author is not trusted; waiting for {}", self.cfg.commands.ok_to_test);
        for run in &gated {
            self.add_flag(run, policy::pending_approval(&self.cfg, &web::public_pr_page(&self.cfg, &run.project, run.pr).unwrap_or(run.pr_url.clone())));
        }
        if self.store.first_sight(&format!("gate:{project}#{pr}"), t).unwrap_or(false) {
            let text = policy::approval_notice(&self.cfg);
            self.add_task(first.id, "comment", json!({"text": text}), t, t + self.cfg.retry_deadline.as_secs_f64());
        }
    }

    fn latest_gated(&self, project: &str, pr: u64) -> Vec<Run> {
        let mut latest: HashMap<String, Run> = HashMap::new();
        for run in self.store.open_runs_of_pr(project, pr).unwrap_or_default().into_iter().filter(|r| r.state == "gated") {
            latest.insert(run.job.clone(), run);
        }
        let mut runs: Vec<Run> = latest.into_values().collect();
        runs.sort_by_key(|r| r.id);
        runs
    }

    fn commands(&mut self, id: &str, topic: &str, commands: Vec<Command>, user: &str, spec: RunSpec, t: f64) {
        let cfg = self.cfg.clone();
        let trust = cfg.trust(&spec.project);
        if policy::trusted_by_config(trust, user) {
            return self.obey(&commands, user, &spec, t);
        }
        if !policy::trust_needs_pagure(trust) {
            return debug!("msg {id} {topic}: ignored: {commands:?} from {user}, who is not trusted");
        }
        debug!("msg {id} {topic}: {commands:?} from {user}: asking Pagure whether {user} is trusted");
        // The trust question hangs on a run of the PR; a PR never seen gets gated runs.
        let mut anchor = self.store.latest_run_of_pr(&spec.project, spec.pr).ok().flatten();
        if anchor.is_none() {
            for job in self.jobs_of(&spec.project) {
                match self.store.add_run(&RunSpec { job, ..spec.clone() }, "gated", t) {
                    Ok(run) => {
                        web::history::reason(&self.store, run, &format!("comment by {user} on a pull request not seen before"));
                        anchor = anchor.or(Some(run))
                    }
                    Err(e) => error!("msg {id}: cannot record a run for {}#{}: {e}", spec.project, spec.pr),
                }
            }
        }
        let Some(anchor) = anchor else { return };
        let payload = json!({"user": user, "then": "commands", "commands": commands, "spec": spec});
        self.add_task(anchor, "trust", payload, t, t + self.cfg.retry_deadline.as_secs_f64());
    }

    fn jobs_of(&self, project: &str) -> Vec<String> {
        self.cfg.projects.get(project).map(|jobs| jobs.iter().map(|j| j.job.clone()).collect()).unwrap_or_default()
    }

    /// A trusted person's commands.
    fn obey(&mut self, commands: &[Command], user: &str, spec: &RunSpec, t: f64) {
        for command in commands {
            let jobs = match command {
                Command::OkToTest => {
                    info!("{}#{}: approved by {user}", spec.project, spec.pr);
                    let _ = self.store.approve(&spec.project, spec.pr, user, t);
                    self.release(&spec.project, spec.pr, t);
                    continue;
                }
                Command::Retest => self.jobs_of(&spec.project),
                Command::Test(name) => {
                    let found = self.cfg.projects.get(&spec.project).into_iter().flatten().find(|j| &j.job == name || &j.display_name == name);
                    match found {
                        Some(job) => vec![job.job.clone()],
                        None => {
                            info!("{}#{}: {user} asked to test {name:?}, which is not a job of {}", spec.project, spec.pr, spec.project);
                            continue;
                        }
                    }
                }
            };
            let why = match command {
                Command::Test(name) => format!("{} {name} by {user}", self.cfg.commands.test),
                _ => format!("{} by {user}", self.cfg.commands.retest),
            };
            for job in jobs {
                self.rebuild(RunSpec { job, ..spec.clone() }, user, &why, t);
            }
        }
    }

    /// Build a job again at the PR's current commit, unless a build of that
    /// commit is already queued or running.
    fn rebuild(&mut self, spec: RunSpec, user: &str, why: &str, t: f64) {
        let open = self.store.open_runs_of_pr(&spec.project, spec.pr).unwrap_or_default();
        if open.iter().any(|r| r.job == spec.job && r.commit == spec.commit && r.state != "gated") {
            return debug!("{}#{}: {} at {} is already queued or running", spec.project, spec.pr, spec.job, policy::short(spec.commit.as_deref()));
        }
        match self.store.add_run(&spec, "triggering", t) {
            Ok(run) => {
                info!("{}#{}: {user} asked: trigger {} at {} (run {run})", spec.project, spec.pr, spec.job, policy::short(spec.commit.as_deref()));
                web::history::reason(&self.store, run, why);
                self.trigger(run, t);
            }
            Err(e) => error!("cannot record a run of {} for {}#{}: {e}", spec.job, spec.project, spec.pr),
        }
    }

    /// Jenkins says a build ended: make its run's follow look now, or find
    /// out which run it is by the note poormanci gave as the cause.
    fn build_finished(&mut self, id: &str, topic: &str, jobs: &[(String, String)], number: u64) {
        let names: Vec<String> = jobs.iter().map(|(_, j)| j.clone()).collect();
        let t = now();
        let known = self.store.open_runs(&names, Some(number)).unwrap_or_default();
        for run in &known {
            debug!("msg {id} {topic}: build #{number} of {} is run {}: looking it up", run.job, run.id);
            self.follow_now(run.id, t);
        }
        if !known.is_empty() {
            return;
        }
        let waiting = self.store.open_runs(&names, None).unwrap_or_default();
        if waiting.is_empty() {
            return debug!("msg {id} {topic}: ignored: no run of {} is waiting for a build; not one of poormanci's", names.join(", "));
        }
        let mut asked = HashSet::new();
        for run in waiting {
            if asked.insert(run.job.clone()) {
                debug!("msg {id} {topic}: build #{number} of {}: reading its cause to find the run", run.job);
                self.add_task(run.id, "lookup", json!({"number": number}), t, t + self.cfg.retry_deadline.as_secs_f64());
            }
        }
    }

    fn follow_now(&mut self, run: i64, t: f64) {
        match self.store.tasks_of_run(run, "follow") {
            Ok(tasks) if !tasks.is_empty() => {
                for task in tasks {
                    let _ = self.store.set_due(task.id, t);
                }
            }
            _ => self.add_task(run, "follow", json!({"polls": 0}), t, NEVER),
        }
    }

    pub fn explain(&self, msg: &Message) -> Vec<String> {
        match policy::decide(&self.cfg, msg, &self.store) {
            Decision::Ignore(why) => vec![format!("ignore: {why}")],
            Decision::Refuse(why) => vec![format!("refuse: {why}")],
            Decision::Trigger { runs, author } => runs
                .iter()
                .map(|s| {
                    format!(
                        "trigger {} for {}#{} by {author} at {}: REPO={} BRANCH={} BRANCH_TO={}",
                        s.job,
                        s.project,
                        s.pr,
                        policy::short(s.commit.as_deref()),
                        s.repo,
                        s.branch,
                        s.branch_to
                    )
                })
                .collect(),
            Decision::Commands { commands, user, spec } => {
                vec![format!("commands {commands:?} from {user} on {}#{}, if {user} is trusted", spec.project, spec.pr)]
            }
            Decision::BuildFinished { jobs, number } => {
                jobs.iter().map(|(p, j)| format!("look up build #{number} of {j} (project {p}) and report it")).collect()
            }
        }
    }

    // ---- tasks ----------------------------------------------------------

    fn add_task(&mut self, run: i64, kind: &str, payload: Value, due: f64, deadline: f64) {
        if let Err(e) = self.store.add_task(run, kind, &payload, due, deadline) {
            error!("state store: cannot record a {kind} for run {run}: {e}");
        }
    }

    fn add_flag(&mut self, run: &Run, flag: FlagReport) {
        // The newest flag for a PR and job replaces any not yet sent.
        for old in self.store.tasks_of_pr(&run.project, run.pr, &run.job, "flag").unwrap_or_default() {
            if !self.in_flight.contains_key(&old) {
                let _ = self.store.delete_task(old);
            }
        }
        let t = now();
        let payload = json!({"status": flag.status.as_str(), "percent": flag.percent, "text": flag.text, "url": flag.url});
        self.add_task(run.id, "flag", payload, t, t + self.cfg.retry_deadline.as_secs_f64());
    }

    /// A flag task for the same PR and job recorded after this one.
    fn newer_flag(&self, task: &Task, run: &Run) -> bool {
        self.store.tasks_of_pr(&run.project, run.pr, &run.job, "flag").unwrap_or_default().iter().any(|&t| t > task.id)
    }

    /// Tasks with the same key run one at a time, in order: the flags of a
    /// PR and job (an old pending must not land last), and its triggers and
    /// cancels (a cancel must reach Jenkins before the next trigger).
    fn serial_key(task: &Task, run: &Run) -> Option<String> {
        let class = match task.kind.as_str() {
            "flag" => "flag",
            "trigger" | "cancel" => "jenkins",
            _ => return None,
        };
        Some(format!("{class}:{}#{}:{}", run.project, run.pr, run.job))
    }

    fn dispatch(&mut self) {
        let Some(peers) = self.peers.clone() else { return };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let due = match self.store.due_tasks(now(), MAX_IN_FLIGHT + self.in_flight.len()) {
            Ok(due) => due,
            Err(e) => return error!("state store: cannot read due tasks: {e}"),
        };
        for task in due {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            if self.in_flight.contains_key(&task.id) {
                continue;
            }
            let run = match self.store.run(task.run) {
                Ok(Some(run)) => run,
                _ => {
                    let _ = self.store.delete_task(task.id);
                    continue;
                }
            };
            let key = Self::serial_key(&task, &run);
            if let Some(k) = &key {
                if !self.busy_keys.insert(k.clone()) {
                    continue;
                }
            }
            if task.kind == "comment" && task.payload.get("tried").is_none() {
                // Recorded (autocommit) before the POST: a comment that may
                // have reached Pagure is looked for before it is sent again.
                let mut payload = task.payload.clone();
                payload["tried"] = json!(true);
                let _ = self.store.set_payload(task.id, &payload);
            }
            self.in_flight.insert(task.id, key);
            let (cfg, peers, tx, id) = (self.cfg.clone(), peers.clone(), self.tx.clone(), task.id);
            let job = self.rt.spawn(worker::execute(cfg, peers, task, run));
            // A second task reports back even if the first one panicked.
            self.rt.spawn(async move {
                let result = job.await.unwrap_or_else(|e| TaskResult::Failed(PeerError::Fatal(format!("internal error: {e}"))));
                let _ = tx.send(Input::Done { task: id, result });
            });
        }
    }

    fn done(&mut self, id: i64, result: TaskResult) {
        if let Some(Some(key)) = self.in_flight.remove(&id) {
            self.busy_keys.remove(&key);
        }
        let (Ok(Some(task)), t) = (self.store.task(id), now()) else { return };
        let Ok(Some(run)) = self.store.run(task.run) else {
            let _ = self.store.delete_task(id);
            return;
        };
        let what = format!("{} of run {} ({} for {}#{})", task.kind, run.id, run.job, run.project, run.pr);
        match result {
            // A newer flag for this PR and job waits behind this one (it
            // could not go while this was in flight): retrying this one
            // would land an old "pending" over it.
            TaskResult::Failed(PeerError::Retry(e)) if task.kind == "flag" && self.newer_flag(&task, &run) => {
                debug!("{what} failed: {e}; dropped, a newer flag replaces it");
                let _ = self.store.delete_task(id);
            }
            TaskResult::Failed(PeerError::Retry(e)) if task.kind == "follow" => {
                debug!("{what}: {e}; polling again later");
                self.poll_again(&task, t);
            }
            TaskResult::Failed(PeerError::Retry(e)) if t < task.deadline => {
                let delay = policy::retry_delay(task.attempts, rand::random::<f64>());
                web::metrics::retry(&task);
                if task.attempts == 0 {
                    warn!("{what} failed: {e}; retrying for up to {} s", (task.deadline - t) as u64);
                } else {
                    debug!("{what} failed again ({}): {e}; next try in {:.1} s", task.attempts + 1, delay.as_secs_f64());
                }
                let _ = self.store.retry_task(id, t + delay.as_secs_f64(), &task.payload, Some(&e));
            }
            TaskResult::Failed(e) => {
                let _ = self.store.delete_task(id);
                self.give_up(&task, &run, &what, e.message(), t);
            }
            TaskResult::Sent => {
                debug!("{what}: done");
                web::metrics::delivered(&self.store, &task, &run, t);
                let _ = self.store.delete_task(id);
            }
            TaskResult::Triggered(item) => {
                web::metrics::triggered(&self.store, &task, &run, t);
                let _ = self.store.delete_task(id);
                info!("{what}: queued as {}", item.as_ref().map_or("an existing queue item".into(), |q| format!("queue item {}", q.id)));
                let _ = self.store.set_queued(run.id, item.map(|q| q.id));
                let job_url = self.job_url(&run.job);
                self.add_flag(&run, policy::pending_queued(&web::public_pr_page(&self.cfg, &run.project, run.pr).unwrap_or(job_url)));
                if self.cfg.jenkins.follow {
                    self.add_task(run.id, "follow", json!({"polls": 0}), t + self.cfg.jenkins.poll_min.as_secs_f64(), NEVER);
                }
            }
            TaskResult::Queue(state) => self.queue_state(&task, &run, state, t),
            TaskResult::Build(info) => {
                if task.kind == "lookup" {
                    let _ = self.store.delete_task(id);
                    self.looked_up(&run, info, t);
                } else if let Some(result) = info.result {
                    let _ = self.store.delete_task(id);
                    let outcome = Outcome::Finished { number: info.number, url: info.url, result: result.as_str().to_string() };
                    self.finish(&run, outcome, t);
                } else if t - run.started.unwrap_or(t) > self.cfg.jenkins.build_timeout.as_secs_f64() {
                    let _ = self.store.delete_task(id);
                    let after_secs = self.cfg.jenkins.build_timeout.as_secs();
                    self.add_task(run.id, "cancel", json!({}), t, t + self.cfg.retry_deadline.as_secs_f64());
                    self.finish(&run, Outcome::NotFinished { number: info.number, url: info.url, after_secs }, t);
                } else {
                    self.poll_again(&task, t);
                }
            }
            TaskResult::Trust(trusted) => {
                let _ = self.store.delete_task(id);
                self.trust_answer(&task, &run, trusted, t);
            }
            TaskResult::Head(head) => {
                let _ = self.store.delete_task(id);
                self.report(&run, &task.payload, head);
            }
        }
    }

    fn trust_answer(&mut self, task: &Task, run: &Run, trusted: bool, t: f64) {
        let user = task.payload["user"].as_str().unwrap_or_default();
        match task.payload["then"].as_str() {
            Some("release") if trusted => self.release(&run.project, run.pr, t),
            Some("release") => self.hold(&run.project, run.pr, t),
            Some("commands") => {
                let commands: Vec<Command> = serde_json::from_value(task.payload["commands"].clone()).unwrap_or_default();
                match serde_json::from_value::<RunSpec>(task.payload["spec"].clone()) {
                    Ok(spec) if trusted => self.obey(&commands, user, &spec, t),
                    _ => debug!("{}#{}: ignored {commands:?} from {user}, who is not trusted", run.project, run.pr),
                }
            }
            other => error!("trust of run {}: unknown follow-up {other:?}", run.id),
        }
    }

    fn poll_again(&mut self, task: &Task, t: f64) {
        let polls = task.payload.get("polls").and_then(Value::as_u64).unwrap_or(0) as u32;
        let due = t + policy::poll_delay(&self.cfg, polls).as_secs_f64();
        let _ = self.store.retry_task(task.id, due, &json!({"polls": polls + 1}), None);
    }

    fn queue_state(&mut self, task: &Task, run: &Run, state: QueueState, t: f64) {
        match state {
            QueueState::Waiting { .. } if t - run.created > self.cfg.jenkins.queue_timeout.as_secs_f64() => {
                let _ = self.store.delete_task(task.id);
                self.add_task(run.id, "cancel", json!({}), t, t + self.cfg.retry_deadline.as_secs_f64());
                self.finish(run, Outcome::NotStarted { after_secs: self.cfg.jenkins.queue_timeout.as_secs() }, t);
            }
            QueueState::Waiting { .. } => self.poll_again(task, t),
            QueueState::Started { number, url } => {
                info!("run {} ({} for {}#{}): build #{number} started", run.id, run.job, run.project, run.pr);
                // Recorded at once: Jenkins forgets the queue item minutes after the start.
                let _ = self.store.set_started(run.id, number, &url, t);
                self.add_flag(run, policy::pending_running(number, &url));
                let _ = self.store.retry_task(task.id, t, &json!({"polls": 0}), None);
            }
            QueueState::Cancelled => {
                let _ = self.store.delete_task(task.id);
                self.finish(run, Outcome::QueueCancelled, t);
            }
            QueueState::Gone => {
                let _ = self.store.delete_task(task.id);
                let why = format!("Jenkins forgot queue item {} before its build was seen", run.queue_id.unwrap_or_default());
                self.finish(run, Outcome::Lost { why }, t);
            }
        }
    }

    /// A build found from a bus message: it is ours only if its note names
    /// a run of this job still waiting to learn its build number.
    fn looked_up(&mut self, asked: &Run, info: crate::jenkins::BuildInfo, t: f64) {
        let note = info.note.as_deref().unwrap_or_default();
        let run = policy::run_in_note(note)
            .and_then(|id| self.store.run(id).ok().flatten())
            .filter(|r| policy::cause(&r.pr_url, r.id) == note && r.job == asked.job)
            .filter(|r| r.state != "done" && r.build.is_none_or(|b| b == info.number));
        let Some(run) = run else {
            return debug!("build #{} of {}: not triggered by poormanci (cause {:?}); ignored", info.number, asked.job, info.note);
        };
        let _ = self.store.set_started(run.id, info.number, &info.url, t);
        match info.result {
            Some(result) => {
                let outcome = Outcome::Finished { number: info.number, url: info.url, result: result.as_str().to_string() };
                self.finish(&run, outcome, t);
            }
            None => self.follow_now(run.id, t + self.cfg.jenkins.poll_min.as_secs_f64()),
        }
    }

    fn give_up(&mut self, task: &Task, run: &Run, what: &str, why: &str, t: f64) {
        error!("{what} failed for good: {why}");
        match task.kind.as_str() {
            "trigger" => {
                web::metrics::trigger_failed(run);
                self.finish(run, Outcome::TriggerFailed { why: why.to_string() }, t)
            }
            "follow" => self.finish(run, Outcome::Lost { why: why.to_string() }, t),
            // Not knowing is not trusting.
            "trust" => self.trust_answer(task, run, false, t),
            "report" => {
                // Without the PR's head, report as if it had not moved: a
                // result is better than none.
                self.report(run, &task.payload, None);
            }
            _ => {}
        }
    }

    /// The run is over: exactly once, queue the report (which first reads
    /// the PR's head to avoid a stale green).
    fn finish(&mut self, run: &Run, outcome: Outcome, t: f64) {
        let value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
        match self.store.finish(run.id, &value, t) {
            Ok(true) if outcome == Outcome::Superseded => {
                debug!("run {} ({} for {}#{}): superseded by a newer commit", run.id, run.job, run.project, run.pr);
            }
            Ok(true) => {
                info!("run {} ({} for {}#{}): finished: {value}", run.id, run.job, run.project, run.pr);
                web::metrics::reported(run, &outcome);
                self.add_task(run.id, "report", json!({"outcome": value}), t, t + self.cfg.retry_deadline.as_secs_f64());
            }
            Ok(false) => debug!("run {}: already finished and reported", run.id),
            Err(e) => error!("state store: cannot finish run {}: {e}", run.id),
        }
    }

    fn report(&mut self, run: &Run, payload: &Value, head: Option<String>) {
        let Ok(outcome) = serde_json::from_value::<Outcome>(payload["outcome"].clone()) else {
            return error!("run {}: unreadable outcome {payload}", run.id);
        };
        let newer = self.store.latest_run(&run.project, run.pr, &run.job).ok().flatten().is_some_and(|l| l != run.id);
        let head = match (&run.commit, head) {
            (Some(built), Some(head)) if *built != head => Head::MovedOn { head, rebuilding: newer },
            _ => Head::Same,
        };
        let job_url = self.job_url(&run.job);
        let mut report = policy::final_report(&self.cfg, &run.job, &job_url, run.commit.as_deref(), &outcome, &head);
        if newer {
            // A newer run of this PR and job owns the flag now.
            report.flag = None;
        }
        let t = now();
        if let Some(flag) = report.flag {
            info!("run {} ({} for {}#{}): flag {} \"{}\"", run.id, run.job, run.project, run.pr, flag.status.as_str(), flag.text);
            self.add_flag(run, flag);
        }
        if let Some(text) = report.comment {
            self.add_task(run.id, "comment", json!({"text": text}), t, t + self.cfg.retry_deadline.as_secs_f64());
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
