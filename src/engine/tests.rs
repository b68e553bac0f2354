//! The engine in-process: a real store in memory, messages and task
//! answers fed in, rows and tasks checked. No sockets, no Python.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Engine, Input};
use crate::config::Config;
use crate::event::parse;
use crate::http::PeerError;
use crate::jenkins::{BuildInfo, BuildResult, Parameter, QueueItem, QueueState};
use crate::pagure::{FlagStatus, PullRequest};
use crate::policy::Outcome;
use crate::store::{RunState, Store};
use crate::testing::fixture;
use crate::work::{AfterTrust, Work};
use crate::worker::TaskResult;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

struct Test {
    engine: Engine,
    _rt: tokio::runtime::Runtime,
    _rx: Receiver<Input>,
    msgs: u32,
}

fn config(extra: Value) -> Config {
    let mut v = json!({
        "poormanci.pagure": {"url": "https://pagure.io", "token": "PAGURE-SECRET", "user": "cibot"},
        "poormanci.jenkins": {"url": "https://jenkins.example.org", "poll_interval": 1},
        "poormanci.projects": {"pungi": [{"job": "pungi-pr", "token": "BEEFCAFE"}, {"job": "pungi-docs", "token": "D0C5"}]},
        "poormanci.trusted": {"users": ["lsedlar"]},
        "poormanci.state_dir": "/nonexistent",
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    Config::from_value(&v).unwrap()
}

impl Test {
    fn new(cfg: Config) -> Test {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, rx) = sync_channel(16);
        let engine = Engine::new(Arc::new(cfg), Store::open_in_memory(), None, rt.handle().clone(), tx);
        Test { engine, _rt: rt, _rx: rx, msgs: 0 }
    }

    /// A pull-request message on PR `id` of pungi, by `author`, at `commit`, into `target`.
    fn pr(&mut self, action: &str, id: u64, author: &str, commit: &str, target: &str) {
        let mut v = fixture("prod2016.pagure.pull-request.new.pungi-235");
        let pr = &mut v["msg"]["pullrequest"];
        pr["id"] = id.into();
        pr["commit_stop"] = commit.into();
        pr["user"]["name"] = author.into();
        pr["repo_from"]["user"]["name"] = author.into();
        pr["branch"] = target.into();
        self.send(&format!("io.pagure.prod.pagure.pull-request.{action}"), v);
    }

    /// Pagure answers the confirm task hung on `run`.
    fn confirm(&mut self, run: i64, answer: PullRequest) {
        let (task, _) = self.task(run, "confirm");
        self.answer(task, TaskResult::PullRequest(Box::new(answer)));
    }

    /// A person's comment on PR `id` (at `commit`, into `target`).
    fn comment(&mut self, id: u64, user: &str, text: &str, commit: &str, target: &str) {
        let mut v = fixture("prod2016.pagure.pull-request.new.pungi-235");
        let pr = &mut v["msg"]["pullrequest"];
        pr["id"] = id.into();
        pr["commit_stop"] = commit.into();
        pr["branch"] = target.into();
        pr["comments"] = json!([{"id": 1, "comment": text, "notification": false, "user": {"name": user}}]);
        self.send("io.pagure.prod.pagure.pull-request.comment.added", v);
    }

    fn send(&mut self, topic: &str, mut v: Value) {
        self.msgs += 1;
        v["msg_id"] = format!("msg-{}", self.msgs).into();
        let msg = parse(&self.engine.cfg, topic, &&v).unwrap();
        self.engine.input(Input::Message(msg));
    }

    fn answer(&mut self, task: i64, result: TaskResult) {
        self.engine.input(Input::Done { task, result });
    }

    /// Every task (id, run, work), oldest first.
    fn tasks(&self) -> Vec<(i64, i64, Work)> {
        let mut t: Vec<_> = self.engine.store.due_tasks(f64::MAX, 1000).unwrap().into_iter().map(|t| (t.id, t.run, t.work)).collect();
        t.sort_by_key(|t| t.0);
        t
    }

    /// The one task of this kind for this run.
    fn task(&self, run: i64, kind: &str) -> (i64, Work) {
        let found: Vec<_> = self.tasks().into_iter().filter(|(_, r, w)| *r == run && w.kind() == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} for run {run} in {:#?}", self.tasks());
        (found[0].0, found[0].2.clone())
    }

    fn kinds(&self, run: i64) -> Vec<&'static str> {
        self.tasks().into_iter().filter(|(_, r, _)| *r == run).map(|(_, _, w)| w.kind()).collect()
    }

    fn state(&self, run: i64) -> RunState {
        self.engine.store.run(run).unwrap().unwrap().state
    }

    fn jobs_of_runs(&self, pr: u64) -> Vec<String> {
        self.engine.store.open_runs_of_pr("pungi", pr).unwrap().into_iter().map(|r| r.job.clone()).collect()
    }
}

/// PR 235 as Pagure's API shows it: `author`'s fork, branch lorax-dir.
fn pagure_pr(author: &str, commit: &str, target: &str) -> PullRequest {
    serde_json::from_value(json!({
        "status": "Open", "commit_stop": commit, "user": {"name": author},
        "repo_from": {"fullname": format!("forks/{author}/pungi"), "user": {"name": author}},
        "branch_from": "lorax-dir", "branch": target,
    }))
    .unwrap()
}

/// Build `number` of run `run`, as Jenkins shows it: with the parameters
/// the run sent; over once it has a result.
fn build(t: &Test, run: i64, number: u64, result: Option<BuildResult>) -> BuildInfo {
    let run = t.engine.store.run(run).unwrap().unwrap();
    let mut sent = crate::policy::trigger_parameters(t.engine.cfg.job(&run.project, &run.job), run.id, &run.spec);
    let (_, cause) = sent.remove(0);
    BuildInfo {
        number,
        url: format!("https://jenkins.example.org/job/pungi-pr/{number}/"),
        queue_id: run.queue_id,
        building: result.is_none(),
        result,
        note: Some(cause),
        causes: vec![],
        parameters: sent.into_iter().map(|(name, value)| Parameter { name, value: Some(value) }).collect(),
        timestamp_ms: None,
        duration_ms: None,
        estimated_duration_ms: None,
    }
}

#[test]
fn a_trusted_authors_pr_is_triggered_followed_and_reported_once() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 235, "lsedlar", A, "master");
    assert_eq!(t.jobs_of_runs(235), ["pungi-pr", "pungi-docs"]);
    assert_eq!((t.state(1), t.kinds(1), t.kinds(2)), (RunState::Triggering, vec!["confirm"], vec![]), "one read of the PR for both runs");
    t.confirm(1, pagure_pr("lsedlar", A, "master"));
    assert_eq!((t.state(1), t.kinds(1), t.kinds(2)), (RunState::Triggering, vec!["trigger"], vec!["trigger"]));

    let (trigger, _) = t.task(1, "trigger");
    t.answer(trigger, TaskResult::Triggered(Some(QueueItem { id: 39, url: "q".into(), merged: false })));
    assert_eq!(t.state(1), RunState::Queued);
    let (_, flag) = t.task(1, "flag");
    assert!(matches!(flag, Work::Flag(ref f) if f.status == FlagStatus::Pending && f.text == "Build queued"), "{flag:?}");
    let (follow, _) = t.task(1, "follow");

    t.answer(follow, TaskResult::Queue(QueueState::Started { number: 7, url: "u".into() }));
    assert_eq!(t.state(1), RunState::Running);
    assert!(matches!(t.task(1, "flag").1, Work::Flag(ref f) if f.text == "Build 7 running"), "the newer flag replaces the older");
    let running = build(&t, 1, 7, None);
    t.answer(follow, TaskResult::Build(running.clone()));
    assert_eq!(t.task(1, "follow").1, Work::Follow { polls: 1 });
    // A result while still building is not the end (post-build steps run).
    t.answer(follow, TaskResult::Build(BuildInfo { result: Some(BuildResult::Success), ..running }));
    assert_eq!(t.state(1), RunState::Running);
    t.answer(follow, TaskResult::Build(build(&t, 1, 7, Some(BuildResult::Success))));
    assert_eq!(t.state(1), RunState::Done);
    let (report, work) = t.task(1, "report");
    assert!(matches!(work, Work::CheckHeadThenReport { outcome: Outcome::Finished { number: 7, .. } }), "{work:?}");

    // Jenkins' bus message for the same build comes late: no second report.
    let mut v = fixture("jenkins.build.passed.1");
    v["msg"]["project"] = "pungi-pr".into();
    v["msg"]["build"] = 7.into();
    t.send("org.fedoraproject.prod.jenkins.build.passed", v);
    assert_eq!(t.kinds(1).iter().filter(|k| **k == "report").count(), 1);

    t.answer(report, TaskResult::Head(Some(A.into())));
    let flag = t.task(1, "flag").1;
    assert!(matches!(flag, Work::Flag(ref f) if f.status == FlagStatus::Success && f.percent == Some(100)), "{flag:?}");
    assert!(matches!(t.task(1, "comment").1, Work::Comment { ref text, tried: false } if text.contains("Build 7 successful")));
}

#[test]
fn a_push_builds_once_and_supersedes_the_older_build() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 235, "lsedlar", A, "master");
    t.confirm(1, pagure_pr("lsedlar", A, "master"));
    let (trigger, _) = t.task(1, "trigger");
    t.answer(trigger, TaskResult::Triggered(Some(QueueItem { id: 39, url: "q".into(), merged: false })));
    // The push is announced twice (topic and notification comment).
    t.pr("updated", 235, "lsedlar", B, "master");
    t.pr("rebased", 235, "lsedlar", B, "master");
    t.confirm(3, pagure_pr("lsedlar", B, "master"));
    assert_eq!(t.jobs_of_runs(235), ["pungi-pr", "pungi-docs"], "one new run per job, the older ones ended");
    assert_eq!(t.state(1), RunState::Done);
    assert_eq!(t.state(2), RunState::Done);
    // Cancelled in Jenkins (the trigger may be under way), never reported.
    for run in [1, 2] {
        let kinds = t.kinds(run);
        assert!(kinds.contains(&"cancel") && !kinds.contains(&"report"), "run {run}: {kinds:?}");
    }
    assert_eq!((t.kinds(3), t.kinds(4)), (vec!["trigger"], vec!["trigger"]));
}

#[test]
fn an_untrusted_author_waits_for_pagure_then_for_ok_to_test() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 300, "mallory", A, "master");
    assert_eq!((t.state(1), t.state(2)), (RunState::Gated, RunState::Gated));
    let (trust, work) = t.task(1, "trust");
    assert_eq!(work, Work::Trust { user: "mallory".into(), fork_owner: None, then: AfterTrust::Release });
    // Pagure does not answer in time: not knowing is not trusting.
    t.answer(trust, TaskResult::Failed(PeerError::Fatal("GET /api/0/pungi: 500".into())));
    assert!(matches!(t.task(1, "flag").1, Work::Flag(ref f) if f.text.contains("/ok-to-test")));
    assert_eq!(t.kinds(1).iter().filter(|k| **k == "comment").count(), 1);
    // Trusted by config: /ok-to-test releases the gated runs.
    t.comment(300, "lsedlar", "/ok-to-test", A, "master");
    assert_eq!((t.state(1), t.state(2)), (RunState::Triggering, RunState::Triggering));
    t.confirm(1, pagure_pr("mallory", A, "master"));
    assert!(t.kinds(1).contains(&"trigger"));
}

#[test]
fn commands_from_someone_unknown_wait_for_pagure() {
    let mut t = Test::new(config(json!({})));
    t.comment(301, "pingou", "/retest", A, "master");
    assert_eq!(t.jobs_of_runs(301), ["pungi-pr", "pungi-docs"], "a PR never seen gets gated runs to hang the question on");
    let (trust, work) = t.task(1, "trust");
    assert!(matches!(work, Work::Trust { then: AfterTrust::Commands { .. }, .. }), "{work:?}");
    t.answer(trust, TaskResult::Trust(true));
    t.confirm(3, pagure_pr("lsedlar", A, "master"));
    let triggered: Vec<_> = t.tasks().into_iter().filter(|(_, _, w)| *w == Work::Trigger).collect();
    assert_eq!(triggered.len(), 2);
}

#[test]
fn a_refused_trigger_is_reported_as_an_error() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 235, "lsedlar", A, "master");
    t.confirm(1, pagure_pr("lsedlar", A, "master"));
    let (trigger, _) = t.task(1, "trigger");
    t.answer(trigger, TaskResult::Failed(PeerError::Fatal("POST /job/pungi-pr/buildWithParameters: 403".into())));
    assert_eq!(t.state(1), RunState::Done);
    let work = t.task(1, "report").1;
    assert!(matches!(work, Work::CheckHeadThenReport { outcome: Outcome::TriggerFailed { .. } }), "{work:?}");
}

#[test]
fn a_failed_request_is_retried_with_the_same_work() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 235, "lsedlar", A, "master");
    t.confirm(1, pagure_pr("lsedlar", A, "master"));
    let (trigger, _) = t.task(1, "trigger");
    t.answer(trigger, TaskResult::Failed(PeerError::Retry("503".into())));
    let task = t.engine.store.task(trigger).unwrap().unwrap();
    assert_eq!((task.work, task.attempts), (Work::Trigger, 1));
    assert_eq!(t.state(1), RunState::Triggering);
}

/// Per-job branch filters choose the jobs on every path: a new PR,
/// `/retest`, `/test`.
#[test]
fn branch_filters_choose_the_jobs() {
    let projects = json!({"pungi": [
        {"job": "pungi-pr", "token": "x", "branches": ["main", "f4[0-9]"]},
        {"job": "pungi-docs", "token": "y"},
    ]});
    let mut t = Test::new(config(json!({"poormanci.projects": projects})));
    t.pr("new", 1, "lsedlar", A, "f41");
    assert_eq!(t.jobs_of_runs(1), ["pungi-pr", "pungi-docs"]);
    t.pr("new", 2, "lsedlar", A, "f410");
    assert_eq!(t.jobs_of_runs(2), ["pungi-docs"]);
    t.comment(2, "lsedlar", "/retest", B, "f410");
    t.comment(2, "lsedlar", "/test pungi-pr", B, "f410");
    assert!(t.jobs_of_runs(2).iter().all(|j| j == "pungi-docs"), "/retest and /test honour the filter");
    t.comment(1, "lsedlar", "/test pungi-pr", B, "f41");
    assert_eq!(t.jobs_of_runs(1).last().map(String::as_str), Some("pungi-pr"));
}

/// Issue 12, 2: what a message claims is checked with Pagure before a build.
#[test]
fn pagure_says_what_builds() {
    let mut t = Test::new(config(json!({})));
    // Pagure does not know the PR: nothing built, nothing reported.
    t.pr("new", 500, "lsedlar", A, "master");
    let (confirm, _) = t.task(1, "confirm");
    t.answer(confirm, TaskResult::Failed(PeerError::Fatal("GET /api/0/pungi/pull-request/500: 404 ENOREQ".into())));
    assert_eq!((t.state(1), t.state(2), t.kinds(1), t.kinds(2)), (RunState::Done, RunState::Done, vec![], vec![]));
    // Closed on Pagure, whatever the message said.
    t.pr("new", 501, "lsedlar", A, "master");
    t.confirm(3, PullRequest { status: "Merged".into(), ..pagure_pr("lsedlar", A, "master") });
    assert_eq!((t.state(3), t.kinds(3)), (RunState::Done, vec![]));
    // The message names a trusted author; Pagure says someone else wrote it.
    t.pr("new", 502, "lsedlar", A, "master");
    t.confirm(5, pagure_pr("mallory", A, "master"));
    assert_eq!((t.state(5), t.kinds(5)), (RunState::Done, vec![]));
    // The message names another repository: Pagure's is built.
    t.pr("new", 503, "lsedlar", A, "master");
    t.confirm(7, PullRequest { source_branch: Some("real".into()), ..pagure_pr("lsedlar", A, "master") });
    let run = t.engine.store.run(7).unwrap().unwrap();
    assert_eq!((run.repo.as_str(), run.source_branch.as_str()), ("https://pagure.io/forks/lsedlar/pungi.git", "real"));
    assert_eq!(t.kinds(7), ["trigger"]);
    // Pagure's head has moved on: that push's own message builds it.
    t.pr("new", 504, "lsedlar", A, "master");
    t.confirm(9, pagure_pr("lsedlar", B, "master"));
    assert_eq!((t.state(9), t.kinds(9)), (RunState::Done, vec![]));
}

/// Issue 12, 6: a trusted author's PR from an untrusted person's fork waits,
/// and Pagure is asked about both.
#[test]
fn the_fork_owner_must_be_trusted_too() {
    let mut t = Test::new(config(json!({})));
    let mut v = fixture("prod2016.pagure.pull-request.new.pungi-235");
    v["msg"]["pullrequest"]["repo_from"]["user"]["name"] = "mallory".into();
    t.send("io.pagure.prod.pagure.pull-request.new", v);
    assert_eq!(t.state(1), RunState::Gated);
    let (_, work) = t.task(1, "trust");
    assert_eq!(work, Work::Trust { user: "lsedlar".into(), fork_owner: Some("mallory".into()), then: AfterTrust::Release });
}

/// Issue 12, 1: a build's bus message does not make a gated run look up its cause.
#[test]
fn a_gated_run_owns_no_build() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 300, "mallory", A, "master");
    assert_eq!(t.state(1), RunState::Gated);
    let mut v = fixture("jenkins.build.passed.1");
    v["msg"]["project"] = "pungi-pr".into();
    v["msg"]["build"] = 5.into();
    t.send("org.fedoraproject.prod.jenkins.build.passed", v);
    assert!(!t.kinds(1).contains(&"lookup"), "{:?}", t.kinds(1));
}

#[test]
fn reports_refused_for_the_token_are_kept_and_woken_when_pagure_takes_a_request() {
    let mut t = Test::new(config(json!({"poormanci.pagure": {"url": "https://pagure.io", "token": "t", "token_retry": 600}})));
    t.pr("new", 235, "lsedlar", A, "master");
    t.confirm(1, pagure_pr("lsedlar", A, "master"));
    let (trigger, _) = t.task(1, "trigger");
    t.answer(trigger, TaskResult::Triggered(Some(QueueItem { id: 39, url: "q".into(), merged: false })));
    let (flag, _) = t.task(1, "flag");
    let refused = || TaskResult::Failed(PeerError::Unauthorized("POST /api/0/pungi/pull-request/235/flag: 401 EINVALIDTOK".into()));
    t.answer(flag, refused());
    let kept = t.engine.store.task(flag).unwrap().expect("kept, not dropped");
    assert!(kept.waiting_for_token && kept.due > super::now() + 500.0, "{kept:?}");
    // Refused again (past any retry deadline): still kept.
    t.answer(flag, refused());
    assert!(t.engine.store.task(flag).unwrap().is_some_and(|k| k.waiting_for_token && k.attempts == 2));
    // Another Pagure request goes through: the kept flag is due at once.
    let (trigger2, _) = t.task(2, "trigger");
    t.answer(trigger2, TaskResult::Triggered(Some(QueueItem { id: 40, url: "q".into(), merged: false })));
    let (flag2, _) = t.task(2, "flag");
    t.answer(flag2, TaskResult::Sent);
    assert!(t.engine.store.task(flag).unwrap().unwrap().due <= super::now());
    // A Jenkins refusal is not kept: the trigger fails and says so.
    assert!(!crate::policy::waits_for_token(&Work::Trigger));
}

#[test]
fn a_superseded_run_closes_its_pending_flag_on_its_own_commit() {
    let mut t = Test::new(config(json!({})));
    t.pr("new", 235, "lsedlar", A, "master");
    t.confirm(1, pagure_pr("lsedlar", A, "master"));
    let (trigger, _) = t.task(1, "trigger");
    t.answer(trigger, TaskResult::Triggered(Some(QueueItem { id: 39, url: "q".into(), merged: false })));
    t.pr("updated", 235, "lsedlar", B, "master");
    t.confirm(3, pagure_pr("lsedlar", B, "master"));
    let (_, close) = t.task(1, "close_stale_flag");
    let Work::CloseStaleFlag { commit, flag } = close else { unreachable!() };
    assert_eq!((commit.as_str(), flag.status, flag.text.as_str()), (A, FlagStatus::Canceled, "Superseded by commit bbbbbbbb"));
    // Run 2 never got as far as a flag: nothing to close.
    assert!(!t.kinds(2).contains(&"close_stale_flag"), "{:?}", t.kinds(2));
}
