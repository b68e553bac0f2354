//! Runs one task's requests on the tokio runtime and says what came back.
//! The engine decides what the answer means; nothing here touches state.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::http::PeerError;
use crate::jenkins::{BuildInfo, Jenkins, QueueItem, QueueState};
use crate::pagure::{Pagure, ProjectAcl, TokenVerdict, PR_COMMENT, PR_FLAG};
use crate::policy;
use crate::store::{Run, Task};
use crate::work::{Peer, Work};

/// How long Pagure's answers on who is a committer or group member are reused.
const ACL_TTL: Duration = Duration::from_secs(300);

/// The two peers, each with its bound on requests in flight.
pub struct Peers {
    pub jenkins: Jenkins,
    pub pagure: Pagure,
    jenkins_slots: Semaphore,
    pagure_slots: Semaphore,
    /// Project ACLs and group members, by project path and group name.
    acls: Mutex<HashMap<String, (Instant, ProjectAcl)>>,
    groups: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// When a refusal last made a project's ACL be read again.
    rereads: Mutex<HashMap<String, Instant>>,
}

impl Peers {
    pub fn new(cfg: &Config) -> Result<Peers, String> {
        Ok(Peers {
            jenkins: Jenkins::new(&cfg.jenkins)?,
            pagure: Pagure::new(&cfg.pagure)?,
            jenkins_slots: Semaphore::new(cfg.jenkins.peer.concurrency),
            pagure_slots: Semaphore::new(cfg.pagure.peer.concurrency),
            acls: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            rereads: Mutex::new(HashMap::new()),
        })
    }

    /// Is `user` trusted on `project`, by config or as Pagure reports the
    /// project's committers and the groups' members? Before saying no from
    /// cached answers, ask Pagure again (someone given commit access a
    /// moment ago is heard at once), at most once per project per
    /// `acl_refresh` (a flood of refusals is not a flood of requests).
    async fn is_trusted(&self, cfg: &Config, project: &str, user: &str) -> Result<bool, PeerError> {
        let (trusted, fresh) = self.trusted_as_known(cfg, project, user, false).await?;
        if trusted || fresh || !self.may_reread(project, cfg.pagure.acl_refresh) {
            return Ok(trusted);
        }
        debug!("{project}: re-reading its ACL before refusing {user}");
        Ok(self.trusted_as_known(cfg, project, user, true).await?.0)
    }

    /// (trusted, whether the project's ACL was read just now).
    async fn trusted_as_known(&self, cfg: &Config, project: &str, user: &str, reread: bool) -> Result<(bool, bool), PeerError> {
        let trust = cfg.trust(project);
        let (acl, fresh) = match cached(&self.acls, project).filter(|_| !reread) {
            Some(acl) => (acl, false),
            None => (remember(&self.acls, project, self.pagure.project_acl(project).await?), true),
        };
        let mut members = Vec::new();
        for group in policy::groups_to_ask(trust, &acl) {
            let names = match cached(&self.groups, &group).filter(|_| !reread) {
                Some(names) => names,
                None => remember(&self.groups, &group, self.pagure.group_members(&group).await?),
            };
            members.extend(names);
        }
        Ok((policy::trusted_by_pagure(trust, user, &acl, &members), fresh))
    }

    fn may_reread(&self, project: &str, every: Duration) -> bool {
        let Ok(mut last) = self.rereads.lock() else { return false };
        if last.get(project).is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        last.retain(|_, at| at.elapsed() < every);
        last.insert(project.to_string(), Instant::now());
        true
    }
}

fn cached<T: Clone>(cache: &Mutex<HashMap<String, (Instant, T)>>, key: &str) -> Option<T> {
    let cache = cache.lock().ok()?;
    cache.get(key).filter(|(at, _)| at.elapsed() < ACL_TTL).map(|(_, v)| v.clone())
}

fn remember<T: Clone>(cache: &Mutex<HashMap<String, (Instant, T)>>, key: &str, value: T) -> T {
    if let Ok(mut cache) = cache.lock() {
        cache.retain(|_, (at, _)| at.elapsed() < ACL_TTL);
        cache.insert(key.to_string(), (Instant::now(), value.clone()));
    }
    value
}

/// What Pagure says of the configured token, on every configured project.
pub async fn check_token(cfg: &Config, pagure: &Pagure) -> TokenVerdict {
    let projects: Vec<&str> = cfg.projects.keys().map(String::as_str).collect();
    let check = pagure.check_token(&projects, &[PR_FLAG, PR_COMMENT]).await;
    check.verdict(cfg.pagure.user.as_deref(), projects.len())
}

#[derive(Debug, Clone)]
pub enum TaskResult {
    /// A flag, comment or cancel was delivered.
    Sent,
    Triggered(Option<QueueItem>),
    Queue(QueueState),
    Build(BuildInfo),
    /// A queued run's build, found in its job's list by queue item.
    Found(BuildInfo),
    /// The PR's current tip, from Pagure.
    Head(Option<String>),
    /// Whether the task's user is trusted.
    Trust(bool),
    /// The PR as Pagure's API shows it.
    PullRequest(Box<crate::pagure::PullRequest>),
    Failed(PeerError),
}

/// Take a run's build out of Jenkins: out of the queue while it waits,
/// stopped once it runs (the item may have started since we last looked).
async fn cancel(jenkins: &Jenkins, run: &Run) -> Result<(), PeerError> {
    jenkins.withdraw(&run.job, run.build, run.queue_id).await.map(|_| ())
}

pub async fn execute(cfg: Arc<Config>, peers: Arc<Peers>, task: Task, run: Run) -> TaskResult {
    let slots = match task.work.peer() {
        Peer::Jenkins => &peers.jenkins_slots,
        Peer::Pagure => &peers.pagure_slots,
    };
    let Ok(_slot) = slots.acquire().await else { return TaskResult::Failed(PeerError::Retry("shutting down".into())) };
    let result = match &task.work {
        Work::Trigger => {
            let Some(job) = cfg.job(&run.project, &run.job) else {
                return TaskResult::Failed(PeerError::Fatal(format!("job {} is no longer configured for {}", run.job, run.project)));
            };
            let sent = policy::trigger_parameters(Some(job), run.id, &run.spec);
            let params: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            peers.jenkins.trigger(&run.job, &job.token, &params).await.map(TaskResult::Triggered).map_err(PeerError::from)
        }
        // Follows go out together, per job: see `poll`.
        Work::Follow { .. } => Err(PeerError::Retry("a follow is polled with its job".into())),
        Work::Lookup { number } => peers.jenkins.build(&run.job, *number).await.map(TaskResult::Build),
        Work::Cancel => cancel(&peers.jenkins, &run).await.map(|_| TaskResult::Sent),
        Work::Flag(flag) => {
            peers.pagure.flag(&run.project, run.pr, &cfg.pagure.flag_name, &run.flag_uid, flag).await.map(|_| TaskResult::Sent)
        }
        Work::CloseStaleFlag { commit, flag } => {
            peers.pagure.commit_flag(&run.project, commit, &cfg.pagure.flag_name, &run.flag_uid, flag).await.map(|_| TaskResult::Sent)
        }
        Work::Trust { user, fork_owner, .. } => {
            let mut trusted = peers.is_trusted(&cfg, &run.project, user).await;
            if let (Ok(true), Some(owner)) = (&trusted, fork_owner) {
                trusted = peers.is_trusted(&cfg, &run.project, owner).await;
            }
            trusted.map(TaskResult::Trust)
        }
        Work::Confirm { .. } => peers.pagure.pull_request(&run.project, run.pr).await.map(|pr| TaskResult::PullRequest(Box::new(pr))),
        Work::Comment { text, tried } => {
            // Tried before (a timeout, a 5xx, a kill): the POST may have
            // landed with its answer lost. Comments are not idempotent.
            if *tried {
                match peers.pagure.pull_request(&run.project, run.pr).await {
                    Ok(pr) if pr.has_comment(cfg.pagure.user.as_deref(), text) => return TaskResult::Sent,
                    Ok(_) => {}
                    Err(e) => return TaskResult::Failed(e),
                }
            }
            peers.pagure.comment(&run.project, run.pr, text).await.map(|_| TaskResult::Sent)
        }
        Work::CheckHeadThenReport { .. } => peers.pagure.pull_request(&run.project, run.pr).await.map(|pr| TaskResult::Head(pr.head)),
    };
    result.unwrap_or_else(TaskResult::Failed)
}

/// How many of a job's latest builds one look reads: enough to hold every
/// build poormanci follows of that job, and a forgotten queue item's build.
pub const RECENT_BUILDS: u32 = 50;
/// How far back a forgotten queue item's build is looked for (one request,
/// only then): a burst can push it past the recent ones before it is looked at.
pub const FORGOTTEN_ITEM_BUILDS: u32 = 1000;

/// One look at Jenkins for many followed runs: the queue once (when a run
/// is still waiting) and each job's recent builds once, however many of
/// its builds are followed. Says for each task what its run's build or
/// queue item shows, and how many requests that took.
pub async fn poll(peers: Arc<Peers>, follows: Vec<(i64, Run)>) -> (Vec<(i64, TaskResult)>, usize) {
    let Ok(_slot) = peers.jenkins_slots.acquire().await else {
        let retry = || TaskResult::Failed(PeerError::Retry("shutting down".into()));
        return (follows.iter().map(|(id, _)| (*id, retry())).collect(), 0);
    };
    let jenkins = &peers.jenkins;
    let mut requests = 0;
    // The queue first: an item that leaves it after this shows in its job's builds.
    let queue = if follows.iter().any(|(_, r)| r.build.is_none()) {
        requests += 1;
        Some(jenkins.queue_items().await)
    } else {
        None
    };
    let waiting = |q: u64| match &queue {
        Some(Ok(items)) => items.iter().find(|i| i.id == q).map(|i| i.state.clone()),
        _ => None,
    };
    let jobs: BTreeSet<String> = follows
        .iter()
        .filter(|(_, r)| r.build.is_some() || r.queue_id.is_some_and(|q| waiting(q).is_none()))
        .map(|(_, r)| r.job.clone())
        .collect();
    let mut lists = tokio::task::JoinSet::new();
    for job in jobs {
        let jenkins = jenkins.clone();
        lists.spawn(async move {
            let builds = jenkins.job_builds(&job, RECENT_BUILDS).await;
            (job, builds)
        });
    }
    requests += lists.len();
    let mut builds = HashMap::new();
    while let Some(joined) = lists.join_next().await {
        if let Ok((job, answer)) = joined {
            builds.insert(job, answer);
        }
    }
    let mut results = Vec::with_capacity(follows.len());
    for (id, run) in follows {
        let listed = builds.get(&run.job);
        let result = match (run.build, run.queue_id) {
            (Some(n), _) => match listed {
                Some(Ok(list)) => match list.iter().find(|b| b.number == n) {
                    Some(b) => Ok(TaskResult::Build(b.clone())),
                    // Older than the list reaches: asked alone.
                    None => {
                        requests += 1;
                        jenkins.build(&run.job, n).await.map(TaskResult::Build)
                    }
                },
                Some(Err(e)) => Err(e.clone()),
                None => Err(PeerError::Retry(format!("the builds of {} were not read", run.job))),
            },
            (None, Some(q)) => match (&queue, waiting(q), listed) {
                (Some(Err(e)), _, _) => Err(e.clone()),
                (_, Some(state), _) => Ok(TaskResult::Queue(state)),
                (_, None, Some(Err(e))) => Err(e.clone()),
                (_, None, Some(Ok(list))) => match policy::build_of_queue_item(list, q) {
                    Some(b) => Ok(TaskResult::Found(b.clone())),
                    None => {
                        // Neither waiting nor among the builds: cancelled,
                        // just starting, or forgotten. The item says which.
                        requests += 1;
                        match jenkins.queue_item(q).await {
                            Ok(QueueState::Started { number, .. }) => {
                                requests += 1;
                                jenkins.build(&run.job, number).await.map(TaskResult::Found)
                            }
                            Ok(QueueState::Gone) => {
                                requests += 1;
                                match jenkins.job_builds(&run.job, FORGOTTEN_ITEM_BUILDS).await {
                                    Ok(list) => Ok(policy::build_of_queue_item(&list, q).map_or(TaskResult::Queue(QueueState::Gone), |b| TaskResult::Found(b.clone()))),
                                    Err(e) => Err(e),
                                }
                            }
                            other => other.map(TaskResult::Queue),
                        }
                    }
                },
                (_, None, None) => Err(PeerError::Retry(format!("the builds of {} were not read", run.job))),
            },
            (None, None) => Err(PeerError::Fatal("Jenkins gave no queue item to follow".into())),
        };
        results.push((id, result.unwrap_or_else(TaskResult::Failed)));
    }
    (results, requests)
}
