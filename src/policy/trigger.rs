//! What builds: which message starts which runs, for which jobs, with
//! which parameters. `jobs_for` is the one place that picks a PR's jobs.

use super::commands::{parse_commands, Command};
use crate::config::{Config, JobConfig};
use crate::event::{Event, Message, PrStatus, PullRequest, Source};
use crate::pagure;
use crate::work::RunState;
use super::report::short;

/// What poormanci already built, so that a push announced twice (the
/// `updated` topic and its companion comment) builds once.
pub trait History {
    fn built(&self, project: &str, pr: u64, job: &str, commit: &str) -> bool;
}

/// One build to start: a job of a project, for one commit of one PR.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub project: String,
    pub pr: u64,
    pub job: String,
    pub commit: Option<String>,
    pub repo: String,
    /// The PR's branch (Jenkins' `BRANCH`); stored as "branch" by 0.1.0.
    #[serde(alias = "branch")]
    pub source_branch: String,
    /// The branch the PR merges into (Jenkins' `BRANCH_TO`); "branch_to" in 0.1.0.
    #[serde(alias = "branch_to")]
    pub target_branch: String,
    pub pr_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; the reason is logged at DEBUG.
    Ignore(String),
    /// Nothing to do, and someone should know (logged at WARNING).
    Refuse(String),
    /// Build these, if everyone in `pushers` (the author and the source
    /// fork's owner) is trusted, or the PR approved.
    Trigger { runs: Vec<RunSpec>, author: String, pushers: Vec<String> },
    /// Commands in a person's comment, to obey if `user` is trusted.
    /// `spec` is the PR at its current commit (its `job` left empty).
    /// `ignored`: commands past the most one comment may give.
    Commands { commands: Vec<Command>, user: String, spec: RunSpec, ignored: usize },
    /// Jenkins says build `number` of one of these (project, job) ended.
    BuildFinished { jobs: Vec<(String, String)>, number: u64 },
}

pub fn decide(cfg: &Config, msg: &Message, history: &impl History) -> Decision {
    match &msg.event {
        Event::NotOurs(why) => Decision::Ignore(why.clone()),
        Event::BuildFinished { display_name, number, .. } => {
            let jobs: Vec<_> = cfg.jobs_named(display_name).map(|(p, j)| (p.to_string(), j.job.clone())).collect();
            if jobs.is_empty() {
                Decision::Ignore(format!("Jenkins job {display_name:?} is not configured"))
            } else {
                Decision::BuildFinished { jobs, number: *number }
            }
        }
        Event::PullRequest(e) => {
            let pr = &e.pr;
            let own = cfg.pagure.user.as_deref();
            if own.is_some() && e.agent.as_deref() == own {
                return Decision::Ignore("an echo of poormanci's own action".into());
            }
            if let Some(why) = unconfigured(cfg, &pr.project) {
                return Decision::Ignore(why);
            }
            if pr.target_is_fork {
                return Decision::Ignore(format!("{}#{} targets a fork", pr.project, pr.id));
            }
            let (commands, ignored) = match (&e.action[..], &pr.last_comment) {
                ("comment.added", Some(c)) if !c.notification => parse_commands(&cfg.commands, c.text.as_deref().unwrap_or("")),
                _ => (Vec::new(), 0),
            };
            if commands.is_empty() {
                if let Err(why) = wants_build(&e.action, pr, own) {
                    return Decision::Ignore(why);
                }
            }
            if pr.status != PrStatus::Open {
                return Decision::Ignore(format!("{}#{} is {:?}", pr.project, pr.id, pr.status));
            }
            let spec = match run_spec(cfg, pr) {
                Ok(spec) => spec,
                Err(why) => return Decision::Refuse(format!("{}#{}: {why}; not built", pr.project, pr.id)),
            };
            if !commands.is_empty() {
                let user = pr.last_comment.as_ref().and_then(|c| c.user.clone()).or_else(|| e.agent.clone()).unwrap_or_default();
                return Decision::Commands { commands, user, spec, ignored };
            }
            let jobs = jobs_for(cfg, &pr.project, &spec.target_branch);
            if jobs.is_empty() {
                return Decision::Ignore(format!("no job of {} builds pull requests into {}", pr.project, spec.target_branch));
            }
            let runs: Vec<RunSpec> = jobs
                .iter()
                .filter(|j| !matches!(&pr.commit, Some(c) if history.built(&pr.project, pr.id, &j.job, c)))
                .map(|j| RunSpec { job: j.job.clone(), ..spec.clone() })
                .collect();
            if runs.is_empty() {
                Decision::Ignore(format!("{}#{} at {} is already built", pr.project, pr.id, short(pr.commit.as_deref())))
            } else {
                Decision::Trigger { runs, author: pr.author.clone(), pushers: pushers(&pr.author, &pr.source) }
            }
        }
    }
}

/// The jobs that build a PR of `project` into `target_branch`: the one
/// place that chooses jobs (new PR, push, `/retest`, `/test`, gating).
pub fn jobs_for<'a>(cfg: &'a Config, project: &str, target_branch: &str) -> Vec<&'a JobConfig> {
    cfg.projects.get(project).into_iter().flatten().filter(|j| builds_into(j, target_branch)).collect()
}

/// A job without `branches` builds every target; otherwise one of its
/// patterns must match the whole branch name.
pub fn builds_into(job: &JobConfig, target_branch: &str) -> bool {
    job.branches.is_empty() || job.branches.iter().any(|p| p.is_match(target_branch))
}

/// What a newer run of a PR and job does to an older one still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supersede {
    /// Not superseded: another job, or the same commit already building.
    Keep,
    /// Ended without a report: it never reached Jenkins.
    End,
    /// Ended, and its build taken out of Jenkins.
    CancelAndEnd,
}

/// A new commit ends the PR's older runs of the same job: gated ones
/// simply; queued or running ones are cancelled in Jenkins, or left to
/// finish when `cancel_superseded` is off. A rebuild of the same commit
/// leaves a build of it alone.
pub fn supersede(cfg: &Config, newer: (i64, &RunSpec), older: (i64, &RunSpec, RunState)) -> Supersede {
    let ((new_id, new), (old_id, old, state)) = (newer, older);
    let gated = state == RunState::Gated;
    if old.job != new.job || old_id >= new_id || (old.commit == new.commit && !gated) || state == RunState::Done {
        return Supersede::Keep;
    }
    match (gated, cfg.jenkins.cancel_superseded) {
        (true, _) => Supersede::End,
        (false, true) => Supersede::CancelAndEnd,
        (false, false) => Supersede::Keep,
    }
}

/// Why a message about this project is none of poormanci's business.
pub fn unconfigured(cfg: &Config, project: &str) -> Option<String> {
    (!cfg.projects.contains_key(project)).then(|| format!("project {project} is not configured"))
}

/// Does this pull-request message announce code to build?
fn wants_build(action: &str, pr: &PullRequest, own_user: Option<&str>) -> Result<(), String> {
    match action {
        "new" | "updated" | "rebased" => Ok(()),
        "comment.added" => {
            let c = pr.last_comment.as_ref().ok_or("a comment.added without comments")?;
            if !c.notification {
                // Whatever it says: only Pagure writes notifications.
                return Err("a comment by a person".into());
            }
            if own_user.is_some() && c.user.as_deref() == own_user {
                return Err("poormanci's own comment".into());
            }
            match c.text.as_deref() {
                Some(t) if is_update_notice(t) => Ok(()),
                _ => Err("a Pagure notification that is not an update".into()),
            }
        }
        other => Err(format!("pull-request.{other} does not trigger builds")),
    }
}
/// Pagure's automatic comments that mean the PR's code changed, in all the
/// wordings Pagure has used: "Pull-Request has been updated|rebased"
/// (2016), "**N new commit(s) added**" and "rebased[ onto <hash>]" since.
/// Close, merge, reopen and metadata notices are not updates.
pub fn is_update_notice(text: &str) -> bool {
    let t = text.trim();
    let first = t.lines().next().unwrap_or("");
    t == "Pull-Request has been updated"
        || t == "Pull-Request has been rebased"
        || t == "rebased"
        || t.strip_prefix("rebased onto ").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        || (first.starts_with("**") && (first.ends_with(" new commit added**") || first.ends_with(" new commits added**")))
}

/// git's own rules for a branch name (`git check-ref-format --branch`), and
/// no leading `-`, which a shell script would read as an option.
pub fn valid_branch(name: &str) -> bool {
    !name.starts_with('-')
        && name.len() <= 255
        && gix_validate::reference::name(format!("refs/heads/{name}").as_bytes().into()).is_ok()
}

/// A user or project name that may go into a URL path.
fn safe_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(['-', '.']) && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
}

/// A remote PR's git URL: a plain http(s) or git URL, nothing git would run.
fn valid_remote(url: &str) -> bool {
    !url.starts_with('-')
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
        && url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "https" | "http" | "git") && u.host_str().is_some() && u.as_str() == url)
}

/// Whose trust a PR's code needs: its author, and the owner of the fork it
/// comes from, who can push to it at any time (a trusted author's PR from
/// an untrusted person's fork waits).
pub fn pushers(author: &str, source: &Source) -> Vec<String> {
    match source {
        Source::Fork { user } if user != author => vec![author.to_string(), user.clone()],
        Source::Fork { .. } | Source::SameProject | Source::Remote { .. } => vec![author.to_string()],
    }
}

/// What Pagure's API says a run builds, where the bus message only claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub repo: String,
    pub source_branch: String,
    pub commit: Option<String>,
}

/// Pagure's word on a PR before poormanci builds it. A bus message says
/// *that* something happened; anyone who can publish on the bus can forge
/// one. So the source repository, branch and head commit are taken from
/// Pagure's answer, a PR that is not open is not built, and when the runs go
/// because their author and fork owner are trusted (`vouched`, as the
/// message named them), Pagure must name the same people.
pub fn confirm(cfg: &Config, claimed: &RunSpec, vouched: &[String], answer: &pagure::PullRequest) -> Result<Confirmed, String> {
    if answer.status != "Open" {
        return Err(format!("Pagure says it is {}", answer.status));
    }
    let author = answer.author.as_ref().map(|u| u.name.clone()).ok_or("Pagure names no author")?;
    let source = match (&answer.source_repo, &answer.remote_git) {
        (Some(repo), _) if repo.fullname == claimed.project => Source::SameProject,
        (Some(repo), _) => match repo.fullname.strip_prefix("forks/").and_then(|rest| rest.split_once('/')) {
            Some((user, path)) if path == claimed.project => Source::Fork { user: user.to_string() },
            _ => return Err(format!("Pagure says it comes from {:?}, not a fork of {}", repo.fullname, claimed.project)),
        },
        (None, Some(url)) => Source::Remote { url: url.clone() },
        (None, None) => return Err("Pagure names no source repository".into()),
    };
    if !vouched.is_empty() {
        let needed = pushers(&author, &source);
        if let Some(other) = needed.iter().find(|p| !vouched.contains(p)) {
            return Err(format!("Pagure says {other} can push to it, not only {}", vouched.join(" and ")));
        }
    }
    let pr = PullRequest {
        project: claimed.project.clone(),
        target_is_fork: false,
        id: claimed.pr,
        status: PrStatus::Open,
        target_branch: answer.target_branch.clone().ok_or("Pagure names no target branch")?,
        source_branch: answer.source_branch.clone().ok_or("Pagure names no source branch")?,
        commit: answer.head.clone(),
        author,
        source,
        last_comment: None,
        title: None, // only the status page reads it, from the message
    };
    let spec = run_spec(cfg, &pr)?;
    if spec.target_branch != claimed.target_branch {
        return Err(format!("Pagure says it merges into {}, not {}", spec.target_branch, claimed.target_branch));
    }
    let commit = match (&claimed.commit, &answer.head) {
        // Built only at the commit the message (or the approver) saw: a newer
        // push has its own message.
        (Some(c), Some(head)) if c != head => return Err(format!("Pagure says its head is now {}, not {}", short(Some(head)), short(Some(c)))),
        (Some(c), _) => Some(c.clone()),
        (None, head) => head.clone(),
    };
    Ok(Confirmed { repo: spec.repo, source_branch: spec.source_branch, commit })
}

fn run_spec(cfg: &Config, pr: &PullRequest) -> Result<RunSpec, String> {
    for (what, b) in [("source branch", &pr.source_branch), ("target branch", &pr.target_branch)] {
        if !valid_branch(b) {
            return Err(format!("{what} {b:?} is not a valid git branch name"));
        }
    }
    let base = cfg.pagure.peer.url.as_str().trim_end_matches('/');
    let repo = match &pr.source {
        Source::SameProject => format!("{base}/{}.git", pr.project),
        Source::Fork { user } if safe_name(user) => format!("{base}/forks/{user}/{}.git", pr.project),
        Source::Fork { user } => return Err(format!("fork owner {user:?} is not a valid user name")),
        Source::Remote { url } if valid_remote(url) => url.clone(),
        Source::Remote { url } => return Err(format!("remote {url:?} is not an http(s) or git URL")),
    };
    Ok(RunSpec {
        project: pr.project.clone(),
        pr: pr.id,
        job: String::new(),
        commit: pr.commit.clone(),
        repo,
        source_branch: pr.source_branch.clone(),
        target_branch: pr.target_branch.clone(),
        pr_url: format!("{base}/{}/pull-request/{}", pr.project, pr.id),
    })
}


#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(cancel_superseded: bool) -> Config {
        Config::from_value(&json!({
            "poormanci.pagure": {"url": "https://pagure.io", "token": "t"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org", "cancel_superseded": cancel_superseded},
            "poormanci.projects": {"pungi": [
                {"job": "pungi-pr", "token": "x", "branches": ["main", "f4[0-9]"]},
                {"job": "pungi-docs", "token": "y"},
            ]},
            "poormanci.state_dir": "/nonexistent",
        }))
        .unwrap()
    }

    #[test]
    fn jobs_for_a_target_branch() {
        let cfg = config(true);
        let jobs = |branch: &str| jobs_for(&cfg, "pungi", branch).iter().map(|j| j.job.as_str()).collect::<Vec<_>>();
        assert_eq!(jobs("main"), ["pungi-pr", "pungi-docs"]);
        assert_eq!(jobs("f41"), ["pungi-pr", "pungi-docs"]);
        for other in ["f410", "xf41", "main2", "rawhide", "Main"] {
            assert_eq!(jobs(other), ["pungi-docs"], "{other}");
        }
        assert!(jobs_for(&cfg, "unknown", "main").is_empty());
    }

    #[test]
    fn a_new_commit_supersedes_older_runs_of_the_same_job() {
        let spec = |job: &str, commit: &str| RunSpec {
            project: "pungi".into(),
            pr: 1,
            job: job.into(),
            commit: Some(commit.into()),
            repo: "r".into(),
            source_branch: "fix".into(),
            target_branch: "main".into(),
            pr_url: "u".into(),
        };
        let (new, cfg) = (spec("pungi-pr", "b"), config(true));
        let s = |old: &RunSpec, id: i64, state: RunState| supersede(&cfg, (5, &new), (id, old, state));
        assert_eq!(s(&spec("pungi-pr", "a"), 4, RunState::Queued), Supersede::CancelAndEnd);
        assert_eq!(s(&spec("pungi-pr", "a"), 4, RunState::Gated), Supersede::End);
        assert_eq!(s(&spec("pungi-docs", "a"), 4, RunState::Queued), Supersede::Keep);
        // A rebuild of the same commit leaves the build under way alone.
        assert_eq!(s(&spec("pungi-pr", "b"), 4, RunState::Running), Supersede::Keep);
        assert_eq!(s(&spec("pungi-pr", "a"), 6, RunState::Queued), Supersede::Keep);
        let off = config(false);
        assert_eq!(supersede(&off, (5, &new), (4, &spec("pungi-pr", "a"), RunState::Running)), Supersede::Keep);
        assert_eq!(supersede(&off, (5, &new), (4, &spec("pungi-pr", "a"), RunState::Gated)), Supersede::End);
    }
}
