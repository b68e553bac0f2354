//! The work poormanci owes its peers, typed: one variant per kind of task,
//! each with its own fields. A task row stores the tag (`kind`) and the
//! other fields as JSON (`payload`); the tags are the kind strings of
//! release 0.1.0, so a state store written by it still loads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pagure::Flag;
use crate::policy::{Command, Outcome, RunSpec};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// `buildWithParameters` for the run's job.
    Trigger,
    /// Take the run's build out of the Jenkins queue, or stop it.
    Cancel,
    /// Set the PR's flag for the run's job (one per PR and job, by uid).
    Flag(Flag),
    /// Comment on the PR. `tried`: a POST was attempted, so before another
    /// the PR is searched for this text (comments are not idempotent).
    Comment {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tried: bool,
    },
    /// Poll the run's queue item, then its build, until it ends.
    Follow {
        #[serde(default)]
        polls: u32,
    },
    /// Read build `number` of the run's job: is it one of ours?
    Lookup { number: u64 },
    /// The run ended: read the PR's head (no stale green), then report.
    #[serde(rename = "report")]
    CheckHeadThenReport { outcome: Outcome },
    /// Set `flag` (with the run's uid) on the run's older `commit`, which
    /// the PR has left: it closes the pending flag left there.
    CloseStaleFlag { commit: String, flag: Flag },
    /// Ask Pagure whether `user` (and `fork_owner`, who can push to the
    /// PR's source) is trusted on the run's project, then act.
    Trust {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fork_owner: Option<String>,
        #[serde(flatten)]
        then: AfterTrust,
    },
    /// Read the PR from Pagure, then trigger `runs` (of this PR) with what
    /// Pagure says they build, or not at all. `vouched`: the people whose
    /// trust let them go, whom Pagure must confirm as the PR's author and
    /// fork owner (empty when a trusted person's command or approval did).
    Confirm {
        runs: Vec<i64>,
        #[serde(default)]
        vouched: Vec<String>,
    },
}

/// What a trust answer unlocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "then", rename_all = "snake_case")]
pub enum AfterTrust {
    /// The PR's author: release its gated runs (or hold them).
    Release,
    /// A person's commands on the PR at `spec`'s commit.
    Commands { commands: Vec<Command>, spec: RunSpec },
}

/// Where a run stands. Stored as its name; only the engine moves it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for a trusted person (or Pagure's word on the author).
    Gated,
    /// The trigger is being sent.
    Triggering,
    /// Jenkins queued it; no build number yet.
    Queued,
    Running,
    /// Finished (or superseded) and reported: terminal.
    Done,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Gated => "gated",
            RunState::Triggering => "triggering",
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        [RunState::Gated, RunState::Triggering, RunState::Queued, RunState::Running, RunState::Done].into_iter().find(|r| r.as_str() == s)
    }
}

impl From<RunState> for crate::db::Value {
    fn from(state: RunState) -> crate::db::Value {
        state.as_str().into()
    }
}

/// Which peer a task talks to: each has its own bound on requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Jenkins,
    Pagure,
}

impl Work {
    pub const TRIGGER: &'static str = "trigger";
    pub const CANCEL: &'static str = "cancel";
    pub const FLAG: &'static str = "flag";
    pub const COMMENT: &'static str = "comment";
    pub const FOLLOW: &'static str = "follow";
    pub const LOOKUP: &'static str = "lookup";
    pub const REPORT: &'static str = "report";
    pub const TRUST: &'static str = "trust";
    pub const CONFIRM: &'static str = "confirm";
    pub const CLOSE_STALE_FLAG: &'static str = "close_stale_flag";

    /// The tag stored in the `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Trigger => Self::TRIGGER,
            Work::Cancel => Self::CANCEL,
            Work::Flag(_) => Self::FLAG,
            Work::Comment { .. } => Self::COMMENT,
            Work::Follow { .. } => Self::FOLLOW,
            Work::Lookup { .. } => Self::LOOKUP,
            Work::CheckHeadThenReport { .. } => Self::REPORT,
            Work::Trust { .. } => Self::TRUST,
            Work::Confirm { .. } => Self::CONFIRM,
            Work::CloseStaleFlag { .. } => Self::CLOSE_STALE_FLAG,
        }
    }

    /// Tasks of one class for one PR and job go one at a time, oldest
    /// first, across instances: its flags (an old pending must not land
    /// last), and its triggers and cancels (a cancel reaches Jenkins before
    /// the next trigger).
    pub fn serial_class(&self) -> Option<&'static str> {
        match self {
            Work::Flag(_) => Some("flag"),
            Work::Trigger | Work::Cancel => Some("jenkins"),
            Work::Comment { .. }
            | Work::Follow { .. }
            | Work::Lookup { .. }
            | Work::CheckHeadThenReport { .. }
            | Work::Trust { .. }
            | Work::Confirm { .. }
            | Work::CloseStaleFlag { .. } => None,
        }
    }

    pub fn peer(&self) -> Peer {
        match self {
            Work::Trigger | Work::Cancel | Work::Follow { .. } | Work::Lookup { .. } => Peer::Jenkins,
            Work::Flag(_)
            | Work::Comment { .. }
            | Work::CheckHeadThenReport { .. }
            | Work::Trust { .. }
            | Work::Confirm { .. }
            | Work::CloseStaleFlag { .. } => Peer::Pagure,
        }
    }

    /// The fields other than the tag, as stored in `payload`.
    pub fn payload(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("kind");
        }
        v
    }

    /// The inverse of (`kind`, `payload`).
    pub fn from_row(kind: &str, payload: &str) -> Result<Work, String> {
        let mut v: Value = serde_json::from_str(payload).map_err(|e| format!("{kind} payload: {e}"))?;
        let Value::Object(m) = &mut v else { return Err(format!("{kind} payload: not a JSON object")) };
        m.insert("kind".into(), kind.into());
        serde_json::from_value(v).map_err(|e| format!("{kind} payload: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagure::FlagStatus;
    use crate::store::Store;

    fn every_kind() -> Vec<Work> {
        let spec = RunSpec {
            project: "pungi".into(),
            pr: 1,
            job: String::new(),
            commit: None,
            repo: "https://pagure.io/pungi.git".into(),
            source_branch: "fix".into(),
            target_branch: "main".into(),
            pr_url: "https://pagure.io/pungi/pull-request/1".into(),
        };
        vec![
            Work::Trigger,
            Work::Cancel,
            Work::Flag(Flag { status: FlagStatus::Pending, percent: None, text: "Build queued".into(), url: "u".into() }),
            Work::Comment { text: "hi".into(), tried: true },
            Work::Follow { polls: 3 },
            Work::Lookup { number: 7 },
            Work::CheckHeadThenReport { outcome: Outcome::QueueCancelled },
            Work::Trust { user: "alice".into(), fork_owner: None, then: AfterTrust::Release },
            Work::Trust { user: "alice".into(), fork_owner: Some("bob".into()), then: AfterTrust::Release },
            Work::CloseStaleFlag { commit: "abc".into(), flag: Flag { status: FlagStatus::Canceled, percent: None, text: "x".into(), url: "u".into() } },
            Work::Trust { user: "alice".into(), fork_owner: None, then: AfterTrust::Commands { commands: vec![Command::Retest], spec } },
            Work::Confirm { runs: vec![1, 2], vouched: vec!["alice".into()] },
        ]
    }

    #[test]
    fn kinds_round_trip_through_a_row() {
        for work in every_kind() {
            let tag = serde_json::to_value(&work).unwrap()["kind"].clone();
            assert_eq!(tag, work.kind(), "{work:?}");
            assert_eq!(Work::from_row(work.kind(), &work.payload().to_string()), Ok(work));
        }
    }

    /// A state store written by release 0.1.0 loads: every task becomes
    /// typed work and every run has a known state.
    #[test]
    fn state_store_of_release_0_1_0_loads() {
        let dir = std::env::temp_dir().join(format!("poormanci-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/state-0.1.0.sqlite3");
        std::fs::copy(file, dir.join("poormanci.sqlite3")).unwrap();
        let store = Store::open(&dir).unwrap();
        let tasks = store.due_tasks(f64::MAX, 1000).unwrap();
        let mut kinds: Vec<&str> = tasks.iter().map(|t| t.work.kind()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, ["cancel", "comment", "flag", "follow", "lookup", "report", "trigger", "trust"]);
        let find = |f: &dyn Fn(&Work) -> bool| tasks.iter().find(|t| f(&t.work)).unwrap_or_else(|| panic!("{tasks:#?}")).clone();
        assert_eq!(find(&|w| matches!(w, Work::Lookup { .. })).work, Work::Lookup { number: 99 });
        let commands = find(&|w| matches!(w, Work::Trust { then: AfterTrust::Commands { .. }, .. }));
        let Work::Trust { user, then: AfterTrust::Commands { commands, spec }, .. } = commands.work else { unreachable!() };
        assert_eq!((user.as_str(), commands), ("aavrug", vec![Command::Retest, Command::Test("pungi-docs".into())]));
        assert_eq!((spec.pr, spec.source_branch.as_str(), spec.target_branch.as_str()), (236, "master", "master"));
        let flag = find(&|w| matches!(w, Work::Flag(f) if f.text == "Build queued"));
        assert!(matches!(flag.work, Work::Flag(Flag { status: FlagStatus::Pending, percent: None, .. })));
        assert!(tasks.iter().any(|t| matches!(t.work, Work::Comment { .. }) && t.attempts == 1));
        assert!(tasks.iter().any(|t| t.work == Work::CheckHeadThenReport { outcome: Outcome::QueueCancelled }));
        let mut states = Vec::new();
        for id in 1..=10 {
            let run = store.run(id).unwrap().unwrap();
            states.push(run.state);
        }
        for state in [RunState::Done, RunState::Triggering, RunState::Gated, RunState::Queued] {
            assert!(states.contains(&state), "{state:?} in {states:?}");
        }
        let run = store.run(3).unwrap().unwrap();
        assert_eq!((run.source_branch.as_str(), run.target_branch.as_str()), ("lorax-dir", "master"));
        // Its runs keep the flag uid 0.1.0 gave them (the job's alone), so a
        // pending flag it set is still updated in place; new runs get the new one.
        assert_eq!(run.flag_uid, crate::policy::legacy_flag_uid(&run.job));
        assert_eq!(run.flag_uid, "poormanci-d8dced95d1428cc9");
        drop(store);
        let store = Store::open(&dir).unwrap();
        let new = store.add_rerun(&run.spec, 0.0).unwrap();
        assert_eq!(store.run(new).unwrap().unwrap().flag_uid, crate::policy::flag_uid(&run.project, run.pr, &run.job));
        assert_eq!(store.run(3).unwrap().unwrap().flag_uid, "poormanci-d8dced95d1428cc9", "still, after a second open");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
