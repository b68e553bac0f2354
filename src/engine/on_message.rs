//! What a bus message does: new runs (triggered or gated), commands, a
//! Jenkins build's end.

use std::collections::{HashMap, HashSet};

use super::{now, Engine, NEVER};
use crate::event::Message;
use crate::policy::{self, Command, Decision, Effect, Outcome, RunSpec, Supersede};
use crate::store::{Run, RunState};
use crate::web;
use crate::work::{AfterTrust, Work};

impl Engine {
    /// Err: the store cannot record it (the caller keeps it for later).
    pub(super) fn message(&mut self, msg: Message) -> Result<(), String> {
        let id = msg.msg_id.as_deref().unwrap_or("-");
        let t = now();
        if let Some(msg_id) = &msg.msg_id {
            match self.store.first_sight(msg_id, t) {
                Ok(true) => {}
                Ok(false) => {
                    web::metrics::message_duplicate();
                    debug!("msg {id} {}: ignored: already handled (same msg_id)", msg.topic);
                    return Ok(());
                }
                Err(e) => return Err(format!("cannot record its msg_id: {e}")),
            }
        }
        let decision = policy::decide(&self.cfg, &msg, &self.store);
        web::metrics::message_decided(&decision);
        web::history::pull_request(&self.store, &self.cfg, &msg, t);
        match decision {
            Decision::Ignore(why) => debug!("msg {id} {}: ignored: {why}", msg.topic),
            Decision::Refuse(why) => warn!("msg {id} {}: refused: {why}", msg.topic),
            Decision::Trigger { runs, author, pushers } => self.start_runs(id, &msg.topic, runs, &author, pushers, t),
            Decision::Commands { commands, user, spec, ignored } => {
                if ignored > 0 {
                    debug!("msg {id} {}: {ignored} more command(s) from {user} ignored: one comment gives {} at most", msg.topic, policy::MAX_COMMANDS);
                }
                self.commands(id, &msg.topic, commands, &user, spec, t)
            }
            Decision::BuildFinished { jobs, number } => self.build_finished(id, &msg.topic, &jobs, number),
        }
        Ok(())
    }

    /// New runs for a PR's commit: started when everyone who can push to it
    /// (`pushers`: the author, the source fork's owner) is trusted by the
    /// config or the PR was approved; otherwise gated until Pagure (or a
    /// trusted person's `/ok-to-test`) says so.
    fn start_runs(&mut self, id: &str, topic: &str, specs: Vec<RunSpec>, author: &str, pushers: Vec<String>, t: f64) {
        let Some(first) = specs.first().cloned() else { return };
        let cfg = self.cfg.clone();
        let trust = cfg.trust(&first.project);
        let by_config = pushers.iter().all(|p| policy::trusted_by_config(trust, p));
        let go = by_config || (policy::approval_carries_over(&cfg) && self.store.approved(&first.project, first.pr).unwrap_or(false));
        // Pagure must confirm the people whose trust let the runs go.
        let vouched = if by_config { pushers.clone() } else { Vec::new() };
        let mut anchor = None;
        for spec in specs {
            match self.store.add_run(&spec, if go { RunState::Triggering } else { RunState::Gated }, t) {
                // Another instance recorded this build first (from another message of the same push).
                Ok(None) => debug!("msg {id} {topic}: {} for {}#{} at {} is already recorded", spec.job, spec.project, spec.pr, policy::short(spec.commit.as_deref())),
                Ok(Some(run)) => {
                    let verb = if go { "trigger" } else { "gate" };
                    info!("msg {id} {topic}: {verb} {} for {}#{} by {author} at {} (run {run})", spec.job, spec.project, spec.pr, policy::short(spec.commit.as_deref()));
                    web::history::reason(&self.store, run, &web::history::reason_of_topic(topic, author));
                    if go {
                        self.trigger(run, &vouched);
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
                let fork_owner = pushers.get(1).cloned();
                self.add_work(run, Work::Trust { user: author.to_string(), fork_owner, then: AfterTrust::Release }, t);
            }
            Some(_) if !go => self.hold(&first.project, first.pr, t),
            _ => {}
        }
    }

    /// A run may go: once Pagure confirms what it builds (see
    /// `ask_pagure_to_confirm`), it is triggered.
    pub(super) fn trigger(&mut self, run: i64, vouched: &[String]) {
        self.to_confirm.push((run, vouched.to_vec()));
    }

    /// One Pagure read for the runs of each PR cleared by the last input.
    pub(super) fn ask_pagure_to_confirm(&mut self, t: f64) {
        let mut groups: Vec<(String, u64, Vec<String>, Vec<i64>)> = Vec::new();
        for (id, vouched) in std::mem::take(&mut self.to_confirm) {
            let Ok(Some(run)) = self.store.run(id) else { continue };
            match groups.iter_mut().find(|g| g.0 == run.project && g.1 == run.pr && g.2 == vouched) {
                Some(g) => g.3.push(id),
                None => groups.push((run.project.clone(), run.pr, vouched, vec![id])),
            }
        }
        for (_, _, vouched, runs) in groups {
            self.add_work(runs[0], Work::Confirm { runs: runs.clone(), vouched }, t);
        }
    }

    /// Pagure confirmed the run: older builds are cancelled first (Jenkins
    /// would merge this trigger into an older one still waiting with the
    /// same parameters), then the trigger goes.
    pub(super) fn trigger_now(&mut self, run: i64, t: f64) {
        self.supersede(run, t);
        self.add_work(run, Work::Trigger, t);
    }

    /// A newer run of a PR and job ends the older ones, as the policy says.
    fn supersede(&mut self, newer: i64, t: f64) {
        let Ok(Some(new)) = self.store.run(newer) else { return };
        for old in self.store.open_runs_of_pr(&new.project, new.pr).unwrap_or_default() {
            match policy::supersede(&self.cfg, (new.id, &new.spec), (old.id, &old.spec, old.state)) {
                Supersede::Keep => continue,
                Supersede::End => {}
                Supersede::CancelAndEnd => {
                    info!("run {} ({} for {}#{}): superseded by run {newer}; cancelling it in Jenkins", old.id, old.job, old.project, old.pr);
                    self.add_work(old.id, Work::Cancel, t);
                }
            }
            // Its pending flag ("waiting", "queued", "running") stays on its
            // commit unless closed there; a run still triggering has none yet.
            if old.state != RunState::Triggering {
                self.close_stale_flag(&old, new.commit.as_deref(), t);
            }
            self.finish(&old, Outcome::Superseded, t);
        }
    }

    /// Close `run`'s flag left on its commit, now that the PR is at `newer`.
    pub(super) fn close_stale_flag(&mut self, run: &Run, newer: Option<&str>, t: f64) {
        if let Some((commit, flag)) = policy::stale_flag(run.commit.as_deref(), newer, &run.pr_url) {
            self.add_work(run.id, Work::CloseStaleFlag { commit, flag }, t);
        }
    }

    /// The latest gated run of each job of a PR may go (`vouched`: see `Work::Confirm`).
    pub(super) fn release(&mut self, project: &str, pr: u64, vouched: &[String]) {
        for run in self.latest_gated(project, pr) {
            if self.store.release(run.id).unwrap_or(false) {
                info!("run {} ({} for {}#{}): approved, triggering", run.id, run.job, run.project, run.pr);
                self.trigger(run.id, vouched);
            }
        }
    }

    /// Gated runs wait for a trusted person: say so on the PR, once.
    pub(super) fn hold(&mut self, project: &str, pr: u64, t: f64) {
        let gated = self.latest_gated(project, pr);
        let Some(first) = gated.first() else { return };
        info!("{project}#{pr}: the author is not trusted; waiting for {}", self.cfg.commands.ok_to_test);
        for run in &gated {
            let page = web::public_pr_page(&self.cfg, &run.project, run.pr);
            self.add_flag(run, policy::pending_approval(&self.cfg, &run.pr_url, page.as_deref()));
        }
        if self.store.first_sight(&format!("gate:{project}#{pr}"), t).unwrap_or(false) {
            let text = policy::approval_notice(&self.cfg);
            self.add_work(first.id, Work::Comment { text, tried: false }, t);
        }
    }

    fn latest_gated(&self, project: &str, pr: u64) -> Vec<Run> {
        let mut latest: HashMap<String, Run> = HashMap::new();
        for run in self.store.open_runs_of_pr(project, pr).unwrap_or_default().into_iter().filter(|r| r.state == RunState::Gated) {
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
            debug!("msg {id} {topic}: {commands:?} from {user}, trusted by the config");
            return self.obey(&commands, user, &spec, t);
        }
        if !policy::trust_needs_pagure(trust) {
            let why = policy::why_not_trusted(trust, &spec.project, user);
            return info!("msg {id} {topic}: refused {commands:?} on {}#{}: {why}", spec.project, spec.pr);
        }
        debug!("msg {id} {topic}: {commands:?} from {user}: asking Pagure whether {user} is trusted");
        // The trust question hangs on a run of the PR; a PR never seen gets gated runs.
        let mut anchor = self.store.latest_run_of_pr(&spec.project, spec.pr).ok().flatten();
        if anchor.is_none() {
            for job in policy::jobs_for(&cfg, &spec.project, &spec.target_branch) {
                match self.store.add_run(&RunSpec { job: job.job.clone(), ..spec.clone() }, RunState::Gated, t) {
                    Ok(None) => anchor = anchor.or(self.store.latest_run_of_pr(&spec.project, spec.pr).ok().flatten()),
                    Ok(Some(run)) => {
                        web::history::reason(&self.store, run, &format!("comment by {user} on a pull request not seen before"));
                        anchor = anchor.or(Some(run))
                    }
                    Err(e) => error!("msg {id}: cannot record a run for {}#{}: {e}", spec.project, spec.pr),
                }
            }
        }
        let Some(anchor) = anchor else { return };
        self.add_work(anchor, Work::Trust { user: user.to_string(), fork_owner: None, then: AfterTrust::Commands { commands, spec } }, t);
    }

    /// A trusted person's commands.
    pub(super) fn obey(&mut self, commands: &[Command], user: &str, spec: &RunSpec, t: f64) {
        for command in commands {
            match policy::effect(&self.cfg, &spec.project, &spec.target_branch, command) {
                Effect::Approve => {
                    info!("{}#{}: {user} approved it at {}", spec.project, spec.pr, policy::short(spec.commit.as_deref()));
                    let _ = self.store.approve(&spec.project, spec.pr, user, t);
                    let gated = self.latest_gated(&spec.project, spec.pr);
                    let (go, stay): (Vec<Run>, Vec<Run>) = gated.into_iter().partition(|r| policy::approves(&self.cfg, spec.commit.as_deref(), r.commit.as_deref()));
                    if let Some(r) = stay.first() {
                        info!(
                            "{}#{}: {user} approved {}, not {}: it stays waiting for {}",
                            spec.project, spec.pr, policy::short(spec.commit.as_deref()), policy::short(r.commit.as_deref()), self.cfg.commands.ok_to_test
                        );
                    }
                    for run in go {
                        if self.store.release(run.id).unwrap_or(false) {
                            info!("run {} ({} for {}#{}): approved, triggering", run.id, run.job, run.project, run.pr);
                            self.trigger(run.id, &[]);
                        }
                    }
                }
                Effect::Build(jobs) => {
                    let why = match command {
                        Command::Test(name) => format!("{} {name} by {user}", self.cfg.commands.test),
                        _ => format!("{} by {user}", self.cfg.commands.retest),
                    };
                    for job in jobs {
                        self.rebuild(RunSpec { job, ..spec.clone() }, user, &why, t);
                    }
                }
                Effect::Nothing(why) => info!("{}#{}: {user} asked for {command:?}: {why}; nothing built", spec.project, spec.pr),
            }
        }
    }

    /// Build a job again at the PR's current commit, unless a build of that
    /// commit is already queued or running.
    fn rebuild(&mut self, spec: RunSpec, user: &str, why: &str, t: f64) {
        let open = self.store.open_runs_of_pr(&spec.project, spec.pr).unwrap_or_default();
        if open.iter().any(|r| r.job == spec.job && r.commit == spec.commit && r.state != RunState::Gated) {
            return debug!("{}#{}: {} at {} is already queued or running", spec.project, spec.pr, spec.job, policy::short(spec.commit.as_deref()));
        }
        match self.store.add_rerun(&spec, t) {
            Ok(run) => {
                info!("{}#{}: {user} asked: trigger {} at {} (run {run})", spec.project, spec.pr, spec.job, policy::short(spec.commit.as_deref()));
                web::history::reason(&self.store, run, why);
                self.trigger(run, &[]);
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
        // A gated run was never triggered: no build can be its.
        let waiting: Vec<Run> = self.store.open_runs(&names, None).unwrap_or_default().into_iter().filter(|r| r.state != RunState::Gated).collect();
        if waiting.is_empty() {
            return debug!("msg {id} {topic}: ignored: no run of {} is waiting for a build; not one of poormanci's", names.join(", "));
        }
        let mut asked = HashSet::new();
        for run in waiting {
            if asked.insert(run.job.clone()) {
                debug!("msg {id} {topic}: build #{number} of {}: reading its cause to find the run", run.job);
                self.add_work(run.id, Work::Lookup { number }, t);
            }
        }
    }

    pub(super) fn follow_now(&mut self, run: i64, t: f64) {
        match self.store.tasks_of_run(run, Work::FOLLOW) {
            Ok(tasks) if !tasks.is_empty() => {
                for task in tasks {
                    if self.in_flight.contains(&task.id) {
                        // Its look may have been answered before the end:
                        // look again as soon as it is back.
                        self.look_again.insert(task.id);
                    }
                    let _ = self.store.set_due(task.id, t);
                }
            }
            _ => self.add_task(run, Work::Follow { polls: 0 }, t, NEVER),
        }
    }

    pub(super) fn explain(&self, msg: &Message) -> Vec<String> {
        match policy::decide(&self.cfg, msg, &self.store) {
            Decision::Ignore(why) => vec![format!("ignore: {why}")],
            Decision::Refuse(why) => vec![format!("refuse: {why}")],
            Decision::Trigger { runs, author, .. } => runs
                .iter()
                .map(|s| {
                    let extra: String = self.cfg.job(&s.project, &s.job).into_iter().flat_map(|j| &j.parameters).map(|(k, v)| format!(" {k}={v}")).collect();
                    format!(
                        "trigger {} for {}#{} by {author} at {}: REPO={} BRANCH={} BRANCH_TO={}{extra}",
                        s.job,
                        s.project,
                        s.pr,
                        policy::short(s.commit.as_deref()),
                        s.repo,
                        s.source_branch,
                        s.target_branch
                    )
                })
                .collect(),
            Decision::Commands { commands, user, spec, .. } => {
                vec![format!("commands {commands:?} from {user} on {}#{}, if {user} is trusted", spec.project, spec.pr)]
            }
            Decision::BuildFinished { jobs, number } => {
                jobs.iter().map(|(p, j)| format!("look up build #{number} of {j} (project {p}) and report it")).collect()
            }
        }
    }
}
