//! Runs one task's requests on the tokio runtime and says what came back.
//! The engine decides what the answer means; nothing here touches state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::http::PeerError;
use crate::jenkins::{BuildInfo, Jenkins, QueueItem, QueueState};
use crate::pagure::{Flag, FlagStatus, Pagure};
use crate::policy;
use crate::store::{Run, Task};

/// How long Pagure's answers on who is a committer or group member are reused.
const ACL_TTL: Duration = Duration::from_secs(300);

/// The two peers, each with its bound on requests in flight.
pub struct Peers {
    pub jenkins: Jenkins,
    pub pagure: Pagure,
    jenkins_slots: Semaphore,
    pagure_slots: Semaphore,
    /// Project ACLs and group members by "project:<path>" / "group:<name>".
    acl_cache: Mutex<HashMap<String, (Instant, Vec<String>, Vec<String>)>>,
}

impl Peers {
    pub fn new(cfg: &Config) -> Result<Peers, String> {
        Ok(Peers {
            jenkins: Jenkins::new(&cfg.jenkins)?,
            pagure: Pagure::new(&cfg.pagure)?,
            jenkins_slots: Semaphore::new(cfg.jenkins.peer.concurrency),
            pagure_slots: Semaphore::new(cfg.pagure.peer.concurrency),
            acl_cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, key: &str) -> Option<(Vec<String>, Vec<String>)> {
        let cache = self.acl_cache.lock().ok()?;
        cache.get(key).filter(|(at, ..)| at.elapsed() < ACL_TTL).map(|(_, a, b)| (a.clone(), b.clone()))
    }

    fn remember(&self, key: String, a: Vec<String>, b: Vec<String>) {
        if let Ok(mut cache) = self.acl_cache.lock() {
            cache.retain(|_, (at, ..)| at.elapsed() < ACL_TTL);
            cache.insert(key, (Instant::now(), a, b));
        }
    }

    /// Is `user` trusted on `project`, by config or as Pagure reports the
    /// project's committers and the groups' members?
    async fn is_trusted(&self, cfg: &Config, project: &str, user: &str) -> Result<bool, PeerError> {
        let trust = cfg.trust(project);
        let key = format!("project:{project}");
        let acl = match self.cached(&key) {
            Some((users, groups)) => policy::Acl { users, groups },
            None => {
                let acl = policy::acl_of_project(&self.pagure.project(project).await?);
                self.remember(key, acl.users.clone(), acl.groups.clone());
                acl
            }
        };
        let mut members = Vec::new();
        for group in policy::groups_to_ask(trust, &acl) {
            let key = format!("group:{group}");
            let names = match self.cached(&key) {
                Some((names, _)) => names,
                None => {
                    let names = self.pagure.group_members(&group).await?;
                    self.remember(key, names.clone(), Vec::new());
                    names
                }
            };
            members.extend(names);
        }
        Ok(policy::trusted_by_pagure(trust, user, &acl, &members))
    }
}

#[derive(Debug)]
pub enum TaskResult {
    /// A flag, comment or cancel was delivered.
    Sent,
    Triggered(Option<QueueItem>),
    Queue(QueueState),
    Build(BuildInfo),
    /// The PR's current tip, from Pagure.
    Head(Option<String>),
    /// Whether the task's user is trusted.
    Trust(bool),
    Failed(PeerError),
}

/// Take a run's build out of Jenkins: out of the queue while it waits,
/// stopped once it runs (the item may have started since we last looked).
async fn cancel(jenkins: &Jenkins, run: &Run) -> Result<(), PeerError> {
    let number = match (run.build, run.queue_id) {
        (Some(n), _) => n,
        (None, Some(q)) => match jenkins.queue_item(q).await? {
            QueueState::Waiting { .. } => return jenkins.cancel_queue_item(q).await,
            QueueState::Started { number, .. } => number,
            QueueState::Cancelled | QueueState::Gone => return Ok(()),
        },
        (None, None) => return Ok(()),
    };
    jenkins.stop_build(&run.job, number).await
}

fn field<'a>(payload: &'a Value, key: &str) -> &'a str {
    payload.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The PR already shows this comment by poormanci's user.
fn has_comment(pr: &Value, user: Option<&str>, text: &str) -> bool {
    pr.get("comments").and_then(Value::as_array).is_some_and(|comments| {
        comments.iter().any(|c| {
            c.get("comment").and_then(Value::as_str).map(str::trim) == Some(text.trim())
                && user.is_none_or(|u| c.pointer("/user/name").and_then(Value::as_str) == Some(u))
        })
    })
}

pub async fn execute(cfg: Arc<Config>, peers: Arc<Peers>, task: Task, run: Run) -> TaskResult {
    let p = &task.payload;
    let on_jenkins = matches!(task.kind.as_str(), "trigger" | "follow" | "lookup" | "cancel");
    let slots = if on_jenkins { &peers.jenkins_slots } else { &peers.pagure_slots };
    let Ok(_slot) = slots.acquire().await else { return TaskResult::Failed(PeerError::Retry("shutting down".into())) };
    let result = match task.kind.as_str() {
        "trigger" => {
            let Some(job) = cfg.job(&run.project, &run.job) else {
                return TaskResult::Failed(PeerError::Fatal(format!("job {} is no longer configured for {}", run.job, run.project)));
            };
            let cause = policy::cause(&run.pr_url, run.id);
            let params = [("cause", cause.as_str()), ("REPO", &run.repo), ("BRANCH", &run.branch), ("BRANCH_TO", &run.branch_to)];
            peers.jenkins.trigger(&run.job, &job.token, &params).await.map(TaskResult::Triggered)
        }
        "follow" => match (run.build, run.queue_id) {
            (Some(n), _) => peers.jenkins.build(&run.job, n).await.map(TaskResult::Build),
            (None, Some(q)) => peers.jenkins.queue_item(q).await.map(TaskResult::Queue),
            (None, None) => Err(PeerError::Fatal("Jenkins gave no queue item to follow".into())),
        },
        "lookup" => {
            let number = p.get("number").and_then(Value::as_u64).unwrap_or_default();
            peers.jenkins.build(&run.job, number).await.map(TaskResult::Build)
        }
        "cancel" => cancel(&peers.jenkins, &run).await.map(|_| TaskResult::Sent),
        "flag" => {
            let flag = Flag {
                username: cfg.pagure.flag_name.clone(),
                status: FlagStatus::parse(field(p, "status")).unwrap_or(FlagStatus::Error),
                comment: field(p, "text").to_string(),
                url: field(p, "url").to_string(),
                percent: p.get("percent").and_then(Value::as_u64).map(|v| v.min(100) as u8),
                uid: policy::flag_uid(&run.job),
            };
            peers.pagure.flag(&run.project, run.pr, &flag).await.map(|_| TaskResult::Sent)
        }
        "trust" => peers.is_trusted(&cfg, &run.project, field(p, "user")).await.map(TaskResult::Trust),
        "comment" => {
            let text = field(p, "text");
            // Tried before (a timeout, a 5xx, a kill): the POST may have
            // landed with its answer lost. Comments are not idempotent.
            if p.get("tried").is_some() {
                match peers.pagure.pull_request(&run.project, run.pr).await {
                    Ok(pr) if has_comment(&pr, cfg.pagure.user.as_deref(), text) => return TaskResult::Sent,
                    Ok(_) => {}
                    Err(e) => return TaskResult::Failed(e),
                }
            }
            peers.pagure.comment(&run.project, run.pr, text).await.map(|_| TaskResult::Sent)
        }
        "report" => peers.pagure.pull_request(&run.project, run.pr).await.map(|pr| {
            TaskResult::Head(pr.get("commit_stop").and_then(Value::as_str).map(str::to_owned))
        }),
        other => Err(PeerError::Fatal(format!("unknown task kind {other:?}"))),
    };
    result.unwrap_or_else(TaskResult::Failed)
}
