//! What a task's answer does: retry, move a run on, finish and report it.

use super::{now, Engine};
use crate::http::PeerError;
use crate::jenkins::{BuildInfo, QueueState};
use crate::policy::{self, GivenUp, Head, Outcome};
use crate::store::{Run, RunState, Task};
use crate::pagure::PullRequest;
use crate::web;
use crate::work::{AfterTrust, Peer, Work};
use crate::worker::TaskResult;

impl Engine {
    pub(super) fn done(&mut self, id: i64, result: TaskResult) {
        self.in_flight.remove(&id);
        self.following.remove(&id);
        let (Ok(Some(task)), t) = (self.store.task(id), now()) else { return };
        let Ok(Some(run)) = self.store.run(task.run) else {
            let _ = self.store.delete_task(id);
            return;
        };
        let what = format!("{} of run {} ({} for {}#{})", task.work.kind(), run.id, run.job, run.project, run.pr);
        match result {
            // A newer flag for this PR and job waits behind this one (it
            // could not go while this was in flight): retrying this one
            // would land an old "pending" over it.
            TaskResult::Failed(PeerError::Retry(e) | PeerError::Unauthorized(e)) if matches!(task.work, Work::Flag(_)) && self.newer_flag(&task, &run) => {
                debug!("{what} failed: {e}; dropped, a newer flag replaces it");
                let _ = self.store.delete_task(id);
            }
            TaskResult::Failed(PeerError::Retry(e)) if matches!(task.work, Work::Follow { .. }) => {
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
                let _ = self.store.retry_task(id, t + delay.as_secs_f64(), &task.work, Some(&e));
            }
            TaskResult::Failed(PeerError::Unauthorized(e)) if policy::waits_for_token(&task.work) => self.hold_for_token(&task, &run, &what, &e, t),
            TaskResult::Failed(e) if matches!(task.work, Work::CloseStaleFlag { .. }) => {
                // Optional (it needs the commit_flag ACL, and the commit in the project).
                let _ = self.store.delete_task(id);
                info!("{what}: the pending flag on the older commit stays: {}", e.message());
            }
            TaskResult::Failed(e) => {
                let _ = self.store.delete_task(id);
                self.give_up(&task, &run, &what, e.message(), t);
            }
            TaskResult::Sent => {
                debug!("{what}: done");
                web::metrics::delivered(&self.store, &task, &run, t);
                if task.work.peer() == Peer::Pagure {
                    self.refused.remove(&(run.project.clone(), task.work.kind()));
                    self.token_works(t);
                }
                let _ = self.store.delete_task(id);
            }
            TaskResult::Triggered(item) => {
                web::metrics::triggered(&self.store, &task, &run, t);
                let _ = self.store.delete_task(id);
                info!("{what}: queued as {}", item.as_ref().map_or("an existing queue item".into(), |q| format!("queue item {}", q.id)));
                let _ = self.store.set_queued(run.id, item.map(|q| q.id));
                let job_url = self.job_url(&run.job);
                let page = web::public_pr_page(&self.cfg, &run.project, run.pr);
                self.add_flag(&run, policy::pending_queued(&job_url, page.as_deref()));
                if self.cfg.jenkins.follow {
                    let first = self.first_look(t);
                    self.add_task(run.id, Work::Follow { polls: 0 }, first, super::NEVER);
                }
            }
            TaskResult::Queue(state) => self.queue_state(&task, &run, state, t),
            TaskResult::Build(info) if matches!(task.work, Work::Lookup { .. }) => {
                let _ = self.store.delete_task(id);
                self.looked_up(&run, info, t);
            }
            TaskResult::Build(info) => self.build_state(&task, &run, info, t),
            TaskResult::Found(info) => {
                info!("run {} ({} for {}#{}): build #{} started (found by its queue item)", run.id, run.job, run.project, run.pr, info.number);
                let _ = self.store.set_started(run.id, info.number, &info.url, t);
                if info.final_result().is_none() {
                    self.add_flag(&run, policy::pending_running(info.number, &info.url));
                }
                self.build_state(&task, &run, info, t);
            }
            TaskResult::Trust(trusted) => {
                self.token_works(t);
                let _ = self.store.delete_task(id);
                self.trust_answer(&task, &run, trusted, t);
            }
            TaskResult::PullRequest(pr) => {
                self.token_works(t);
                let _ = self.store.delete_task(id);
                self.confirmed(&task.work, Ok(&pr), t);
            }
            TaskResult::Head(head) => {
                self.token_works(t);
                let _ = self.store.delete_task(id);
                self.report(&run, &task.work, head);
            }
        }
    }

    /// Pagure refused the token: keep the work, try it every `token_retry`
    /// and at the next start, and at once when Pagure takes a request again.
    fn hold_for_token(&mut self, task: &Task, run: &Run, what: &str, e: &str, t: f64) {
        let every = self.cfg.pagure.token_retry.as_secs_f64();
        // One WARNING per project and kind of request, until one works again.
        if task.waiting_for_token || !self.refused.insert((run.project.clone(), task.work.kind())) {
            debug!("{what}: still refused: {e}; next try in {every} s");
        } else {
            warn!("{what}: refused by Pagure: {e}; kept until the token works (tried every {every} s and at start; see poormanci status)");
        }
        let deadline = t + every + self.cfg.retry_deadline.as_secs_f64();
        let _ = self.store.hold_for_token(task.id, t + every, deadline, e);
        self.token_held = true;
    }

    /// Pagure took a request: work kept for a working token goes now.
    fn token_works(&mut self, t: f64) {
        if !std::mem::take(&mut self.token_held) {
            return;
        }
        match self.store.wake_held(t) {
            Ok(0) => {}
            Ok(n) => info!("Pagure accepts the token again: {n} kept request(s) go now"),
            Err(e) => error!("state store: cannot wake the work kept for a token: {e}"),
        }
    }

    fn trust_answer(&mut self, task: &Task, run: &Run, trusted: bool, t: f64) {
        let Work::Trust { user, fork_owner, then } = &task.work else {
            return error!("run {}: a trust answer for a {} task", run.id, task.work.kind());
        };
        match then {
            AfterTrust::Release if trusted => {
                let vouched: Vec<String> = std::iter::once(user).chain(fork_owner).cloned().collect();
                self.release(&run.project, run.pr, &vouched)
            }
            AfterTrust::Release => self.hold(&run.project, run.pr, t),
            AfterTrust::Commands { commands, spec } if trusted => self.obey(commands, user, spec, t),
            AfterTrust::Commands { commands, .. } => {
                let why = policy::why_not_trusted(self.cfg.trust(&run.project), &run.project, user);
                info!("{}#{}: refused {commands:?}: {why}", run.project, run.pr)
            }
        }
    }

    /// A followed build: over only once Jenkins says it is no longer
    /// building (post-build steps may still change a result set before).
    fn build_state(&mut self, task: &Task, run: &Run, info: BuildInfo, t: f64) {
        if let Some(outcome) = self.verdict(run, &info) {
            let _ = self.store.delete_task(task.id);
            self.finish(run, outcome, t);
        } else if let Some(outcome) = policy::build_timed_out(&self.cfg, run.started.unwrap_or(t), t, info.number, &info.url) {
            let _ = self.store.delete_task(task.id);
            self.add_work(run.id, Work::Cancel, t);
            self.finish(run, outcome, t);
        } else {
            self.poll_again(task, t);
        }
    }

    /// What the build says about the run once over; a job without COMMIT
    /// is warned about once.
    fn verdict(&mut self, run: &Run, info: &BuildInfo) -> Option<Outcome> {
        let sent = policy::trigger_parameters(self.cfg.job(&run.project, &run.job), run.id, &run.spec);
        let (outcome, how) = policy::verdict(&run.job, &sent, info)?;
        if how == Some(policy::BuiltAsAsked::WithoutCommit) && self.warned_no_commit.insert(run.job.clone()) {
            warn!(
                "job {} does not define the COMMIT parameter: it builds whatever the PR's branch points at when it runs; add COMMIT (see contrib/jenkins/poormanci-job.yaml)",
                run.job
            );
        }
        Some(outcome)
    }

    fn poll_again(&mut self, task: &Task, t: f64) {
        let polls = match task.work {
            Work::Follow { polls } => polls,
            _ => 0,
        };
        let due = if self.look_again.remove(&task.id) { t } else { t + policy::poll_delay(&self.cfg, self.poll_requests).as_secs_f64() };
        let _ = self.store.retry_task(task.id, due, &Work::Follow { polls: polls + 1 }, None);
    }

    fn queue_state(&mut self, task: &Task, run: &Run, state: QueueState, t: f64) {
        match state {
            QueueState::Waiting { .. } => match policy::queue_timed_out(&self.cfg, run.created, t) {
                Some(outcome) => {
                    let _ = self.store.delete_task(task.id);
                    self.add_work(run.id, Work::Cancel, t);
                    self.finish(run, outcome, t);
                }
                None => self.poll_again(task, t),
            },
            QueueState::Started { number, url } => {
                info!("run {} ({} for {}#{}): build #{number} started", run.id, run.job, run.project, run.pr);
                // Recorded at once: Jenkins forgets the queue item minutes after the start.
                let _ = self.store.set_started(run.id, number, &url, t);
                self.add_flag(run, policy::pending_running(number, &url));
                let _ = self.store.retry_task(task.id, t, &Work::Follow { polls: 0 }, None);
            }
            QueueState::Cancelled => {
                let _ = self.store.delete_task(task.id);
                self.finish(run, Outcome::QueueCancelled, t);
            }
            QueueState::Gone => {
                let _ = self.store.delete_task(task.id);
                let why = format!(
                    "Jenkins forgot queue item {} and no build among the last {} of job {} came from it",
                    run.queue_id.unwrap_or_default(),
                    crate::worker::FORGOTTEN_ITEM_BUILDS,
                    run.job
                );
                self.finish(run, Outcome::Lost { why }, t);
            }
        }
    }

    /// A build found from a bus message: it is ours only if it is the
    /// build of a triggered run of this job (see `policy::owns_build`).
    fn looked_up(&mut self, asked: &Run, info: BuildInfo, t: f64) {
        let note = info.note.as_deref().unwrap_or_default();
        let Some(run) = policy::run_in_note(note).and_then(|id| self.store.run(id).ok().flatten()).filter(|r| r.job == asked.job) else {
            return debug!("build #{} of {}: not triggered by poormanci (cause {:?}); ignored", info.number, asked.job, info.note);
        };
        let Some(job) = self.cfg.job(&run.project, &run.job) else {
            return debug!("build #{} of {}: job no longer configured; ignored", info.number, run.job);
        };
        let claimed = policy::Claimed { run: run.id, spec: &run.spec, state: run.state, queue_id: run.queue_id, build: run.build };
        if let Err(why) = policy::owns_build(Some(job), claimed, &info) {
            return debug!("build #{} of {}: not run {}'s build ({why}); ignored", info.number, run.job, run.id);
        }
        let _ = self.store.set_started(run.id, info.number, &info.url, t);
        match self.verdict(&run, &info) {
            Some(outcome) => self.finish(&run, outcome, t),
            None => self.follow_now(run.id, t + self.cfg.jenkins.poll_interval.as_secs_f64()),
        }
    }

    /// Pagure's answer on a PR whose runs wait to be triggered: each goes
    /// with what Pagure says it builds, or ends unbuilt and unreported.
    fn confirmed(&mut self, work: &Work, answer: Result<&PullRequest, &str>, t: f64) {
        let Work::Confirm { runs, vouched } = work else {
            return error!("a pull request answer for a {} task", work.kind());
        };
        let mut said = false;
        for &id in runs {
            let Ok(Some(run)) = self.store.run(id) else { continue };
            if run.state != RunState::Triggering {
                continue; // superseded meanwhile
            }
            let confirmed = match answer {
                Ok(pr) => policy::confirm(&self.cfg, &run.spec, vouched, pr),
                Err(why) => Err(format!("Pagure did not show it: {why}")),
            };
            match confirmed {
                Ok(c) => {
                    if c.repo != run.repo || c.source_branch != run.source_branch {
                        warn!(
                            "run {} ({} for {}#{}): the message said {} {} at {}, Pagure says {} {} at {}: building what Pagure says",
                            run.id, run.job, run.project, run.pr, run.repo, run.source_branch, policy::short(run.commit.as_deref()),
                            c.repo, c.source_branch, policy::short(c.commit.as_deref())
                        );
                    }
                    if c.repo != run.repo || c.source_branch != run.source_branch || c.commit != run.commit {
                        // (A message without a commit, from an older Pagure, gets Pagure's head.)
                        match self.store.set_source(run.id, &c.repo, &c.source_branch, c.commit.as_deref()) {
                            Err(e) if e.kind == crate::db::ErrorKind::Conflict => {
                                // Another instance has this build, from another message of the same push.
                                debug!("run {} ({} for {}#{}): {} is already built by another run", run.id, run.job, run.project, run.pr, policy::short(c.commit.as_deref()));
                                let _ = self.store.finish(run.id, &serde_json::json!({"not_built": "another run builds this commit"}), t);
                                continue;
                            }
                            Err(e) => error!("run {}: state store: cannot record what Pagure says it builds: {e}", run.id),
                            Ok(()) => {}
                        }
                    }
                    self.trigger_now(run.id, t);
                }
                Err(why) => {
                    if !said {
                        warn!("{}#{}: not built: {why}", run.project, run.pr);
                        said = true;
                    }
                    let _ = self.store.finish(run.id, &serde_json::json!({"not_built": why}), t);
                }
            }
        }
    }

    fn give_up(&mut self, task: &Task, run: &Run, what: &str, why: &str, t: f64) {
        let given_up = policy::given_up(&task.work, why);
        if given_up != GivenUp::NotBuilt {
            // (A PR Pagure did not show gets its own WARNING line.)
            error!("{what} failed for good: {why}");
        }
        match given_up {
            GivenUp::Finish(outcome) => self.finish(run, outcome, t),
            GivenUp::NotTrusted => self.trust_answer(task, run, false, t),
            GivenUp::ReportAsIs => self.report(run, &task.work, None),
            GivenUp::NotBuilt => self.confirmed(&task.work, Err(why), t),
            GivenUp::Drop => {}
        }
    }

    /// The run is over: exactly once, queue the report (which first reads
    /// the PR's head to avoid a stale green).
    pub(super) fn finish(&mut self, run: &Run, outcome: Outcome, t: f64) {
        let value = serde_json::to_value(&outcome).unwrap_or_default();
        match self.store.finish(run.id, &value, t) {
            Ok(true) if outcome == Outcome::Superseded => {
                info!("run {} ({} for {}#{}) at {}: superseded by a newer commit; not flagged", run.id, run.job, run.project, run.pr, policy::short(run.commit.as_deref()));
            }
            Ok(true) => {
                info!("run {} ({} for {}#{}): finished: {value}", run.id, run.job, run.project, run.pr);
                web::metrics::finished(run, &outcome);
                self.add_work(run.id, Work::CheckHeadThenReport { outcome }, t);
            }
            Ok(false) => debug!("run {}: already finished and reported", run.id),
            Err(e) => error!("state store: cannot finish run {}: {e}", run.id),
        }
    }

    fn report(&mut self, run: &Run, work: &Work, head: Option<String>) {
        let Work::CheckHeadThenReport { outcome } = work else {
            return error!("run {}: a report for a {} task", run.id, work.kind());
        };
        let latest = self.store.latest_run(&run.project, run.pr, &run.job).ok().flatten();
        let newer = latest.is_some_and(|l| l != run.id);
        let head = match (&run.commit, head) {
            (Some(built), Some(head)) if *built != head => Head::MovedOn { head, rebuilding: newer },
            _ => Head::Same,
        };
        let job_url = self.job_url(&run.job);
        let mut report = policy::final_report(&self.cfg, &run.job, &job_url, run.commit.as_deref(), outcome, &head);
        let t = now();
        let newer_commit = match &head {
            Head::MovedOn { head, .. } => Some(head.clone()),
            Head::Same if newer => latest.and_then(|id| self.store.run(id).ok().flatten()).and_then(|r| r.spec.commit),
            Head::Same => None,
        };
        if newer || matches!(head, Head::MovedOn { .. }) {
            let (built, why) = (policy::short(run.commit.as_deref()), match &newer_commit {
                Some(c) => format!("the pull request has moved on to {}", policy::short(Some(c))),
                None => "a newer run of this job owns the flag".to_string(),
            });
            let result = policy::final_report(&self.cfg, &run.job, &job_url, run.commit.as_deref(), outcome, &Head::Same).flag.map(|f| f.text);
            info!("run {} ({} for {}#{}) at {built}: result not flagged ({}): {why}", run.id, run.job, run.project, run.pr, result.unwrap_or_default());
            // A newer run of this PR and job owns the flag now.
            report.flag = None;
            self.close_stale_flag(run, newer_commit.as_deref(), t);
        }
        if let Some(flag) = report.flag {
            info!("run {} ({} for {}#{}): flag {} \"{}\"", run.id, run.job, run.project, run.pr, flag.status.as_str(), flag.text);
            self.add_flag(run, flag);
        }
        if let Some(text) = report.comment {
            self.add_work(run.id, Work::Comment { text, tried: false }, t);
        }
    }
}
