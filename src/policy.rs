//! Every rule of the product, as pure functions: which message triggers
//! which builds, what a Jenkins result means on Pagure, how often to poll.
//! No I/O here; the engine applies what these return.

use std::time::Duration;

use crate::config::{Commands, Config, Trust};
use crate::event::{Event, Message, PrStatus, PullRequest, Source};
use crate::jenkins::BuildResult;
use crate::pagure::FlagStatus;

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
    pub branch: String,
    pub branch_to: String,
    pub pr_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; the reason is logged at DEBUG.
    Ignore(String),
    /// Nothing to do, and someone should know (logged at WARNING).
    Refuse(String),
    /// Build these, if `author` is trusted or the PR approved.
    Trigger { runs: Vec<RunSpec>, author: String },
    /// Commands in a person's comment, to obey if `user` is trusted.
    /// `spec` is the PR at its current commit (its `job` left empty).
    Commands { commands: Vec<Command>, user: String, spec: RunSpec },
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
            let Some(jobs) = cfg.projects.get(&pr.project).filter(|_| !pr.target_is_fork) else {
                return Decision::Ignore(format!("{}#{} targets a fork", pr.project, pr.id));
            };
            let commands = match (&e.action[..], &pr.last_comment) {
                ("comment.added", Some(c)) if !c.notification => parse_commands(&cfg.commands, c.text.as_deref().unwrap_or("")),
                _ => Vec::new(),
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
                return Decision::Commands { commands, user, spec };
            }
            let runs: Vec<RunSpec> = jobs
                .iter()
                .filter(|j| !matches!(&pr.commit, Some(c) if history.built(&pr.project, pr.id, &j.job, c)))
                .map(|j| RunSpec { job: j.job.clone(), ..spec.clone() })
                .collect();
            if runs.is_empty() {
                Decision::Ignore(format!("{}#{} at {} is already built", pr.project, pr.id, short(pr.commit.as_deref())))
            } else {
                Decision::Trigger { runs, author: pr.author.clone() }
            }
        }
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Approve the PR: its current and later commits build.
    OkToTest,
    /// Build every job again at the current commit.
    Retest,
    /// Build one job again.
    Test(String),
}

/// The commands in a comment: each alone on its own line, so that quoting
/// or mentioning one in a sentence (as poormanci's own comments do) is not one.
pub fn parse_commands(phrases: &Commands, text: &str) -> Vec<Command> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        let command = if line == phrases.ok_to_test {
            Command::OkToTest
        } else if line == phrases.retest {
            Command::Retest
        } else if let Some(job) = line.strip_prefix(phrases.test.as_str()).and_then(|r| r.strip_prefix(' ')) {
            Command::Test(job.trim().to_string())
        } else {
            continue;
        };
        if !out.contains(&command) {
            out.push(command);
        }
    }
    out
}

/// Who may do what, as far as the config alone tells.
pub fn trusted_by_config(trust: &Trust, user: &str) -> bool {
    trust.users.iter().any(|u| u == user)
}

/// Whether Pagure must be asked (project committers, group members).
pub fn trust_needs_pagure(trust: &Trust) -> bool {
    trust.committers || !trust.groups.is_empty()
}

/// A project's committers as `GET /api/0/<project>` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// Owner, admins and committers; "collaborator" (commit to some branches
/// only) and "ticket" do not make anyone trusted.
pub fn acl_of_project(project: &serde_json::Value) -> Acl {
    let names = |v: &serde_json::Value, levels: &[&str]| -> Vec<String> {
        levels.iter().flat_map(|l| v.get(*l).and_then(|x| x.as_array()).into_iter().flatten()).filter_map(|n| n.as_str().map(str::to_owned)).collect()
    };
    Acl {
        users: names(&project["access_users"], &["owner", "admin", "commit"]),
        groups: names(&project["access_groups"], &["admin", "commit"]),
    }
}

/// The groups whose members decide whether a user is trusted.
pub fn groups_to_ask(trust: &Trust, acl: &Acl) -> Vec<String> {
    let mut groups = trust.groups.clone();
    if trust.committers {
        groups.extend(acl.groups.iter().cloned());
    }
    groups.sort();
    groups.dedup();
    groups
}

pub fn trusted_by_pagure(trust: &Trust, user: &str, acl: &Acl, members_of_groups: &[String]) -> bool {
    trusted_by_config(trust, user) || (trust.committers && acl.users.iter().any(|u| u == user)) || members_of_groups.iter().any(|m| m == user)
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

fn run_spec(cfg: &Config, pr: &PullRequest) -> Result<RunSpec, String> {
    for (what, b) in [("source branch", &pr.branch_from), ("target branch", &pr.branch)] {
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
        branch: pr.branch_from.clone(),
        branch_to: pr.branch.clone(),
        pr_url: format!("{base}/{}/pull-request/{}", pr.project, pr.id),
    })
}

/// The `cause` given to Jenkins, kept as the build's remote-cause note: the
/// PR's URL reads well in Jenkins' UI, the run number finds our record.
pub fn cause(pr_url: &str, run: i64) -> String {
    format!("{pr_url} [poormanci run {run}]")
}

/// The run number in a note written by [`cause`]; the caller checks that
/// the whole note is that run's cause.
pub fn run_in_note(note: &str) -> Option<i64> {
    note.strip_suffix(']')?.rsplit_once(" [poormanci run ")?.1.parse().ok()
}

/// The flag's uid: one flag per (PR, job), updated in place from pending to
/// its result. Pagure allows 32 characters; job paths can be longer, hence
/// a hash (FNV-1a: stable across releases, unlike std's hasher).
pub fn flag_uid(job: &str) -> String {
    let hash = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("poormanci-{hash:016x}")
}

pub fn short(commit: Option<&str>) -> &str {
    commit.map_or("an unknown commit", |c| c.char_indices().nth(8).map_or(c, |(i, _)| &c[..i]))
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Finished { number: u64, url: String, result: String },
    QueueCancelled,
    NotStarted { after_secs: u64 },
    NotFinished { number: u64, url: String, after_secs: u64 },
    /// Jenkins refused the trigger, or never answered before the deadline.
    TriggerFailed { why: String },
    /// The build could not be followed (queue item forgotten, build deleted).
    Lost { why: String },
    /// A newer commit of the PR is built instead; nothing to report.
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagReport {
    pub status: FlagStatus,
    pub percent: Option<u8>,
    pub text: String,
    pub url: String,
}

/// Where the PR stands when a result comes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Still at the commit that was built (or either commit is unknown).
    Same,
    /// Moved on to `head` since; `rebuilding`: a newer run owns the flag.
    MovedOn { head: String, rebuilding: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub flag: Option<FlagReport>,
    pub comment: Option<String>,
}

pub fn pending_queued(job_url: &str) -> FlagReport {
    FlagReport { status: FlagStatus::Pending, percent: None, text: "Build queued".into(), url: job_url.into() }
}

pub fn pending_approval(cfg: &Config, pr_url: &str) -> FlagReport {
    FlagReport {
        status: FlagStatus::Pending,
        percent: None,
        text: format!("Waiting for a trusted person to comment {}", cfg.commands.ok_to_test),
        url: pr_url.into(),
    }
}

/// Posted once per PR whose author is not trusted. The command is quoted
/// inside a sentence, so this comment is never read as one.
pub fn approval_notice(cfg: &Config) -> String {
    format!(
        "Thanks for the pull request! Its tests run on {} once a trusted person (a committer of this \
         project) has looked at it and commented `{}` on a line of its own.",
        cfg.pagure.flag_name, cfg.commands.ok_to_test
    )
}

pub fn pending_running(number: u64, url: &str) -> FlagReport {
    FlagReport { status: FlagStatus::Pending, percent: None, text: format!("Build #{number} running"), url: url.into() }
}

/// The flag and comment for a finished run.
///
/// No stale green: the flag always speaks for the PR's latest commit, so a
/// result for an older commit never touches it; the comment then says
/// plainly which commit the result is for.
pub fn final_report(cfg: &Config, job: &str, job_url: &str, commit: Option<&str>, outcome: &Outcome, head: &Head) -> Report {
    let (status, percent, text, url) = describe(outcome, commit, job_url);
    let mut comment = format!("**{}**: {text} — job `{job}`, {url}", cfg.pagure.flag_name);
    let flag = match head {
        Head::Same => Some(FlagReport { status, percent, text, url }),
        Head::MovedOn { head, rebuilding } => {
            comment.push_str(&format!(
                "\n\nThis result is for commit {}; the pull request has moved on to {}{}.",
                short(commit),
                short(Some(head)),
                if *rebuilding { ", which is being built" } else { ", which is not built yet" }
            ));
            None
        }
    };
    Report { flag, comment: cfg.pagure.comment.then_some(comment) }
}

fn describe(outcome: &Outcome, commit: Option<&str>, job_url: &str) -> (FlagStatus, Option<u8>, String, String) {
    let of = commit.map(|c| format!(" (commit {})", short(Some(c)))).unwrap_or_default();
    match outcome {
        Outcome::Finished { number, url, result } => {
            let (status, percent, word) = match BuildResult::parse(result) {
                BuildResult::Success => (FlagStatus::Success, Some(100), "successful"),
                BuildResult::Unstable => (FlagStatus::Failure, None, "unstable"),
                BuildResult::Failure => (FlagStatus::Failure, None, "failed"),
                BuildResult::Aborted => (FlagStatus::Canceled, None, "aborted"),
                BuildResult::NotBuilt => (FlagStatus::Error, None, "not built"),
                BuildResult::Other(_) => (FlagStatus::Error, None, "ended with an unknown result"),
            };
            (status, percent, format!("Build #{number} {word}{of}"), url.clone())
        }
        Outcome::QueueCancelled => (FlagStatus::Canceled, None, format!("Build cancelled in the Jenkins queue{of}"), job_url.into()),
        Outcome::NotStarted { after_secs } => {
            (FlagStatus::Error, None, format!("Build did not start within {}{of}", human(*after_secs)), job_url.into())
        }
        Outcome::NotFinished { number, url, after_secs } => {
            (FlagStatus::Error, None, format!("Build #{number} did not finish within {}{of}", human(*after_secs)), url.clone())
        }
        Outcome::TriggerFailed { why } => (FlagStatus::Error, None, format!("Could not start a build{of}: {why}"), job_url.into()),
        Outcome::Lost { why } => (FlagStatus::Error, None, format!("Lost track of the build{of}: {why}"), job_url.into()),
        Outcome::Superseded => (FlagStatus::Canceled, None, format!("Superseded by a newer commit{of}"), job_url.into()),
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Delay before poll number `polls` of a queue item or build: starts at
/// poll_min, grows by half each time, up to poll_max.
pub fn poll_delay(cfg: &Config, polls: u32) -> Duration {
    let min = cfg.jenkins.poll_min.as_secs_f64();
    Duration::from_secs_f64((min * 1.5_f64.powi(polls.min(64) as i32)).min(cfg.jenkins.poll_max.as_secs_f64()))
}

/// Delay before retry number `attempt` of a failed request: exponential from
/// 1 s up to 5 min, with jitter (`jitter` in 0..1) so that many retries
/// after an outage do not all land at once.
pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let full = (2_f64.powi(attempt.min(20) as i32)).min(300.0);
    Duration::from_secs_f64(full * (0.5 + jitter.clamp(0.0, 1.0) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse;
    use crate::testing::{config, fixture};
    use std::collections::HashSet;

    #[derive(Default)]
    struct Built(HashSet<(String, u64, String, String)>);
    impl History for Built {
        fn built(&self, project: &str, pr: u64, job: &str, commit: &str) -> bool {
            self.0.contains(&(project.into(), pr, job.into(), commit.into()))
        }
    }

    fn decide_fixture(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Decision {
        let mut v = fixture(name);
        edit(&mut v);
        let topic = v["topic"].as_str().unwrap().replace("io.pagure.dev.", "io.pagure.prod.");
        let msg = parse(&config(), &topic, &&v).unwrap();
        decide(&config(), &msg, &Built::default())
    }

    #[test]
    fn new_pr_triggers_every_job_with_fork_parameters() {
        let Decision::Trigger { runs, .. } = decide_fixture("prod2016.pagure.pull-request.new.pungi-235", |_| {}) else { panic!() };
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].repo, "https://pagure.io/forks/lsedlar/pungi.git");
        assert_eq!((runs[0].branch.as_str(), runs[0].branch_to.as_str()), ("lorax-dir", "master"));
        assert_eq!(runs[0].pr_url, "https://pagure.io/pungi/pull-request/235");
        assert_eq!([runs[0].job.as_str(), runs[1].job.as_str()], ["pungi-pr", "pungi-docs"]);
    }

    #[test]
    fn update_notices() {
        for t in [
            "Pull-Request has been updated",
            "Pull-Request has been rebased",
            "rebased",
            "rebased onto 9067a82cc7ef52413758dbc44cad7a8207e4aee9",
            "**1 new commit added**\n\n * ``Second commit``\n",
            "**2 new commits added**\n\n * ``a``\n * ``b``\n",
        ] {
            assert!(is_update_notice(t), "{t}");
        }
        for t in [
            "Pull-Request has been reopened by alice",
            "Pull-Request has been closed by alice",
            "Pull-Request has been merged by alice",
            "**Metadata Update from @alice**:\n- Pull-request tagged with: foo",
            "Pretty please pagure-ci rebuild",
            "rebased onto ; rm -rf /",
            "I rebased",
        ] {
            assert!(!is_update_notice(t), "{t}");
        }
    }

    #[test]
    fn notification_comment_triggers_but_typed_text_does_not() {
        let name = "prod2016.pagure.pull-request.comment.added.rebased-notification.pagure-843";
        let mut cfg = config();
        cfg.projects.insert("pagure".into(), cfg.projects["pungi"].clone());
        let mut v = fixture(name);
        let msg = parse(&cfg, v["topic"].as_str().unwrap(), &&v).unwrap();
        assert!(matches!(decide(&cfg, &msg, &Built::default()), Decision::Trigger { .. }));
        let last = v["msg"]["pullrequest"]["comments"].as_array_mut().unwrap().last_mut().unwrap();
        last["notification"] = false.into();
        let msg = parse(&cfg, v["topic"].as_str().unwrap(), &&v).unwrap();
        assert_eq!(decide(&cfg, &msg, &Built::default()), Decision::Ignore("a comment by a person".into()));
    }

    #[test]
    fn one_build_per_commit_and_job() {
        let v = fixture("pagure.pull-request.updated.1");
        let mut cfg = config();
        cfg.pagure.peer.topic = "io.pagure.dev.pagure".into();
        cfg.projects.insert("test".into(), cfg.projects["pungi"].clone());
        let msg = parse(&cfg, v["topic"].as_str().unwrap(), &&v).unwrap();
        let mut built = Built::default();
        built.0.insert(("test".into(), 87, "pungi-pr".into(), "5eea7904b69aa3f349a7b1759627f4cfc5f7bee2".into()));
        let Decision::Trigger { runs, .. } = decide(&cfg, &msg, &built) else { panic!() };
        assert_eq!(runs.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(), ["pungi-docs"]);
        built.0.insert(("test".into(), 87, "pungi-docs".into(), "5eea7904b69aa3f349a7b1759627f4cfc5f7bee2".into()));
        assert!(matches!(decide(&cfg, &msg, &built), Decision::Ignore(_)));
    }

    #[test]
    fn closed_unconfigured_and_other_topics_are_ignored() {
        let closed = decide_fixture("prod2016.pagure.pull-request.closed.pungi-234", |_| {});
        assert!(matches!(closed, Decision::Ignore(ref w) if w.contains("does not trigger")), "{closed:?}");
        let merged = decide_fixture("prod2016.pagure.pull-request.new.pungi-235", |v| v["msg"]["pullrequest"]["status"] = "Merged".into());
        assert_eq!(merged, Decision::Ignore("pungi#235 is Merged".into()));
        let other = decide_fixture("prod2016.pagure.pull-request.new.pungi-fedora-19", |_| {});
        assert_eq!(other, Decision::Ignore("project pungi-fedora is not configured".into()));
        let flag = decide_fixture("prod2016.pagure.pull-request.flag.added.poormanci.pungi-234", |_| {});
        assert!(matches!(flag, Decision::Ignore(_)));
    }

    #[test]
    fn hostile_branches_and_remotes_are_refused() {
        for b in ["-x", "--upload-pack=evil", "a..b", "foo bar", "a\nb", "a~1", "", "x.lock", "@{-1}"] {
            assert!(!valid_branch(b), "{b:?}");
            let d = decide_fixture("prod2016.pagure.pull-request.new.pungi-235", |v| v["msg"]["pullrequest"]["branch_from"] = b.into());
            assert!(matches!(d, Decision::Refuse(_)), "{b:?}: {d:?}");
        }
        for b in ["master", "feature/x", "f29", "fix-thing"] {
            assert!(valid_branch(b), "{b}");
        }
        let remote = |url: &str| {
            decide_fixture("prod2016.pagure.pull-request.new.pungi-235", |v| {
                v["msg"]["pullrequest"]["repo_from"] = serde_json::Value::Null;
                v["msg"]["pullrequest"]["remote_git"] = url.into();
            })
        };
        assert!(matches!(remote("https://github.com/a/b.git"), Decision::Trigger { runs: ref r, .. } if r[0].repo == "https://github.com/a/b.git"));
        for bad in ["ext::sh -c evil", "--upload-pack=x", "/etc/passwd", "file:///etc", "https://a b/"] {
            assert!(matches!(remote(bad), Decision::Refuse(_)), "{bad}");
        }
    }

    #[test]
    fn own_echoes_are_ignored() {
        let mut cfg = config();
        cfg.pagure.user = Some("pingou".into());
        let v = fixture("pagure.pull-request.new.1");
        let topic = v["topic"].as_str().unwrap().replace("io.pagure.dev.", "io.pagure.prod.");
        let msg = parse(&cfg, &topic, &&v).unwrap();
        assert_eq!(decide(&cfg, &msg, &Built::default()), Decision::Ignore("an echo of poormanci's own action".into()));
    }

    #[test]
    fn commands_are_whole_lines() {
        let cfg = config();
        let text = "LGTM\n/ok-to-test\r\n  /retest  \n/test pungi-docs\nplease run `/ok-to-test`\n/retesting";
        assert_eq!(parse_commands(&cfg.commands, text), [Command::OkToTest, Command::Retest, Command::Test("pungi-docs".into())]);
        assert!(parse_commands(&cfg.commands, &approval_notice(&cfg)).is_empty());
        let d = decide_fixture("prod2016.pagure.pull-request.comment.added.human.pagure-843", |v| {
            v["msg"]["pullrequest"]["project"]["name"] = "pungi".into();
            let c = v["msg"]["pullrequest"]["comments"].as_array_mut().unwrap().last_mut().unwrap();
            c["comment"] = "/retest".into();
        });
        assert!(matches!(d, Decision::Commands { ref commands, .. } if commands == &[Command::Retest]), "{d:?}");
    }

    #[test]
    fn who_is_trusted() {
        let project = serde_json::json!({
            "access_users": {"owner": ["ralph"], "admin": ["ann"], "commit": ["cid"], "collaborator": ["col"], "ticket": ["tim"]},
            "access_groups": {"admin": ["admins"], "commit": [], "ticket": ["triagers"]},
        });
        let acl = acl_of_project(&project);
        assert_eq!(acl, Acl { users: vec!["ralph".into(), "ann".into(), "cid".into()], groups: vec!["admins".into()] });
        let trust = Trust { users: vec!["alice".into()], groups: vec!["qa".into()], committers: true };
        assert_eq!(groups_to_ask(&trust, &acl), ["admins", "qa"]);
        for user in ["alice", "ralph", "ann", "cid", "gus"] {
            assert!(trusted_by_pagure(&trust, user, &acl, &["gus".into()]), "{user}");
        }
        for user in ["col", "tim", "mallory"] {
            assert!(!trusted_by_pagure(&trust, user, &acl, &["gus".into()]), "{user}");
        }
        let no_committers = Trust { committers: false, ..trust };
        assert!(!trusted_by_pagure(&no_committers, "ralph", &acl, &[]));
    }

    #[test]
    fn cause_round_trip() {
        let url = "https://pagure.io/pungi/pull-request/235";
        assert_eq!(run_in_note(&cause(url, 42)), Some(42));
        assert_eq!(run_in_note("203"), None);
        assert_eq!(run_in_note("x [poormanci run 4x]"), None);
    }

    #[test]
    fn flag_uid_is_short_and_stable() {
        assert_eq!(flag_uid("pungi-pr"), flag_uid("pungi-pr"));
        assert_ne!(flag_uid("pungi-pr"), flag_uid("pungi-pr2"));
        assert!(flag_uid(&"x/".repeat(100)).len() <= 32);
    }

    #[test]
    fn results_map_to_flags() {
        let cfg = config();
        let report = |result: &str| {
            let o = Outcome::Finished { number: 149, url: "http://j.example.org/job/p/149/".into(), result: result.into() };
            final_report(&cfg, "p", "http://j.example.org/job/p/", Some("3f2a9c1e77"), &o, &Head::Same).flag.unwrap()
        };
        let ok = report("SUCCESS");
        assert_eq!((ok.status, ok.percent, ok.text.as_str()), (FlagStatus::Success, Some(100), "Build #149 successful (commit 3f2a9c1e)"));
        assert_eq!(report("FAILURE").status, FlagStatus::Failure);
        assert_eq!(report("UNSTABLE").status, FlagStatus::Failure);
        assert_eq!(report("ABORTED").status, FlagStatus::Canceled);
        assert_eq!(report("NOT_BUILT").status, FlagStatus::Error);
        assert_eq!(report("WEIRD").status, FlagStatus::Error);
    }

    #[test]
    fn no_stale_green() {
        let cfg = config();
        let o = Outcome::Finished { number: 7, url: "http://j.example.org/job/p/7/".into(), result: "SUCCESS".into() };
        let head = Head::MovedOn { head: "bbbbbbbbbb".into(), rebuilding: false };
        let r = final_report(&cfg, "p", "http://j.example.org/job/p/", Some("aaaaaaaaaa"), &o, &head);
        assert_eq!(r.flag, None);
        assert!(r.comment.unwrap().contains("This result is for commit aaaaaaaa; the pull request has moved on to bbbbbbbb"));
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let cfg = config();
        assert_eq!(poll_delay(&cfg, 0), cfg.jenkins.poll_min);
        assert_eq!(poll_delay(&cfg, 1000), cfg.jenkins.poll_max);
        assert!(retry_delay(0, 0.0) >= Duration::from_millis(500));
        assert!(retry_delay(100, 1.0) <= Duration::from_secs(300));
    }
}

/// Invariants of `decide` over generated Pagure pull-request messages, shaped
/// like the 2016 `new` fixture and varied in every field `decide` reads.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::event::parse;
    use crate::testing::{config, fixture};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::collections::HashSet;
    use std::sync::OnceLock;

    const ACTIONS: &[&str] = &[
        "new", "updated", "rebased", "reopened", "comment.added", "comment.edited", "closed",
        "flag.added", "flag.updated", "tag.added", "assigned.added", "initial_comment.edited",
    ];

    /// A generated message, kept beside its JSON so that properties are
    /// checked against what was generated, not against what `parse` read.
    #[derive(Debug, Clone)]
    struct Gen {
        action: &'static str,
        status: Value,
        /// (name, namespace)
        project: (&'static str, Option<&'static str>),
        target_is_fork: bool,
        id: u64,
        commit: Option<String>,
        branch: String,
        branch_from: String,
        source: Src,
        comments: Vec<(String, bool, String)>,
        agent: Option<&'static str>,
        author: &'static str,
    }

    #[derive(Debug, Clone)]
    enum Src {
        Same,
        Fork(String),
        Remote(String),
    }

    impl Gen {
        fn path(&self) -> String {
            match self.project.1 {
                Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.project.0),
                _ => self.project.0.to_string(),
            }
        }

        fn open(&self) -> bool {
            self.status == json!("Open") || self.status == json!(true)
        }

        fn topic(&self) -> String {
            format!("{}.pull-request.{}", config().pagure.peer.topic, self.action)
        }

        fn envelope(&self) -> Value {
            static TEMPLATE: OnceLock<Value> = OnceLock::new();
            let mut v = TEMPLATE.get_or_init(|| fixture("prod2016.pagure.pull-request.new.pungi-235")).clone();
            v["topic"] = self.topic().into();
            v["msg"]["agent"] = self.agent.map_or(Value::Null, Value::from);
            let pr = &mut v["msg"]["pullrequest"];
            pr["status"] = self.status.clone();
            pr["id"] = self.id.into();
            pr["commit_stop"] = self.commit.clone().map_or(Value::Null, Value::from);
            pr["branch"] = self.branch.clone().into();
            pr["branch_from"] = self.branch_from.clone().into();
            pr["user"]["name"] = self.author.into();
            pr["project"]["name"] = self.project.0.into();
            pr["project"]["namespace"] = self.project.1.map_or(Value::Null, Value::from);
            if self.target_is_fork {
                pr["project"]["parent"] = json!({"name": self.project.0, "parent": null});
            }
            let parent = pr["repo_from"]["parent"].clone();
            match &self.source {
                Src::Same => {
                    pr["repo_from"] = json!({"name": self.project.0, "parent": null, "user": {"name": "ausil"}});
                }
                Src::Fork(user) => {
                    pr["repo_from"] = json!({"name": self.project.0, "parent": parent, "user": {"name": user}});
                }
                Src::Remote(url) => {
                    pr["repo_from"] = Value::Null;
                    pr["remote_git"] = url.clone().into();
                }
            }
            pr["comments"] = self
                .comments
                .iter()
                .enumerate()
                .map(|(i, (text, notification, user))| {
                    json!({"id": i, "comment": text, "notification": notification, "user": {"name": user}, "date_created": "1458306353"})
                })
                .collect();
            v
        }

        fn message(&self) -> Message {
            parse(&config(), &self.topic(), &&self.envelope()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
        }
    }

    /// Branch names: git's usual ones (mostly, so that builds happen) and
    /// what a hostile PR could send.
    fn branch() -> impl Strategy<Value = String> {
        prop_oneof![
            10 => prop::sample::select(vec![
                "master", "main", "f39", "feature/x", "fix-thing", "release/1.2", "caf\u{e9}", "a;b",
            ])
            .prop_map(String::from),
            2 => prop::sample::select(vec![
                "-x", "--upload-pack=evil", "a..b", "foo bar", "a\nb", "a~1", "", "x.lock", "@{-1}", "@", "a^b",
                "a:b", "a?b", "a*b", "a[b", "/a", "a/", "a//b", ".a", "a/.b", "a\\b", "a\u{7f}", "$(id)", "a\u{0}b",
            ])
            .prop_map(String::from),
            1 => "[a-z0-9._/@{}~^:\\- -]{0,12}",
            1 => "\\PC{0,8}",
        ]
    }

    fn commit() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            "[0-9a-f]{40}".prop_map(Some),
            prop::sample::select(vec!["aaaaaaa\u{e9}", "-x", "", "$(id)", "HEAD"]).prop_map(|s| Some(s.to_string())),
        ]
    }

    fn source() -> impl Strategy<Value = Src> {
        prop_oneof![
            4 => Just(Src::Same),
            4 => Just(Src::Fork("lsedlar".into())),
            2 => Just(Src::Remote("https://github.com/a/b.git".into())),
            2 => prop::sample::select(vec!["lsedlar", "a-b", "x.y", "-evil", "..", ".x", "a/b", "a b", "", "\u{fc}ser", "u;id"])
                .prop_map(|u| Src::Fork(u.into())),
            1 => "[a-z.-]{0,6}".prop_map(Src::Fork),
            3 => prop::sample::select(vec![
                "https://github.com/a/b.git", "http://git.example.org/r", "git://host/r.git", "ext::sh -c evil",
                "--upload-pack=x", "/etc/passwd", "file:///etc", "https://a b/", "https:/h/x.git", "HTTPS://GITHUB.COM/a",
                "ssh://host/x", "git@github.com:a/b.git", "https://host/x\n", "-https://x", "https://host:443/x", "",
            ])
            .prop_map(|u| Src::Remote(u.into())),
            3 => "(https?|git|ssh|ext|file):/?/?[a-zA-Z@:./ -]{0,12}".prop_map(Src::Remote),
        ]
    }

    fn comment_text() -> impl Strategy<Value = String> {
        let text = |texts: &[&'static str]| prop::sample::select(texts.to_vec()).prop_map(String::from);
        prop_oneof![
            2 => text(&[
                "Pull-Request has been updated", "Pull-Request has been rebased", "rebased",
                "rebased onto 9067a82cc7ef52413758dbc44cad7a8207e4aee9", "**1 new commit added**\n\n * ``x``\n",
            ]),
            1 => text(&[
                "Pull-Request has been closed by alice", "Pull-Request has been reopened by alice",
                "**Metadata Update from @alice**:\n- Pull-request tagged with: foo", "please /retest", "LGTM",
            ]),
            2 => text(&["/retest", "/ok-to-test", "/test pungi-pr", "/test nope", "LGTM\n/retest"]),
            1 => "\\PC{0,24}",
        ]
    }

    fn user() -> impl Strategy<Value = String> {
        prop_oneof![6 => prop::sample::select(vec!["alice", "pagure", "lsedlar"]), 1 => Just("cibot")].prop_map(String::from)
    }

    fn gen() -> impl Strategy<Value = Gen> {
        let status = prop_oneof![
            3 => Just(json!("Open")),
            1 => prop::sample::select(vec![json!("Merged"), json!("Closed"), json!(true), json!(false)]),
        ];
        let project = prop_oneof![
            6 => prop::sample::select(vec![("pungi", None), ("python-foo", Some("rpms")), ("pungi", Some(""))]),
            1 => prop::sample::select(vec![("pungi-fedora", None), ("python-foo", None), ("pungi", Some("forks"))]),
        ];
        let agent = prop_oneof![6 => Just(None), 3 => prop::sample::select(vec![Some("pagure"), Some("alice")]), 1 => Just(Some("cibot"))];
        // Mostly the actions that build, so that every rule is reached.
        let action = prop_oneof![
            2 => prop::sample::select(&ACTIONS[..3]),
            2 => Just("comment.added"),
            1 => prop::sample::select(ACTIONS),
        ];
        let author = prop::sample::select(vec!["lsedlar", "alice", "cibot"]);
        (
            (action, status, project, prop::bool::weighted(0.1), 1..1000u64, commit()),
            (branch(), branch(), source(), vec((comment_text(), any::<bool>(), user()), 0..6), agent, author),
        )
            .prop_map(|((action, status, project, target_is_fork, id, commit), (branch, branch_from, source, comments, agent, author))| Gen {
                action,
                status,
                project,
                target_is_fork,
                id,
                commit,
                branch,
                branch_from,
                source,
                comments,
                agent,
                author,
            })
    }

    #[derive(Default)]
    struct Built(HashSet<(String, u64, String, String)>);
    impl History for Built {
        fn built(&self, project: &str, pr: u64, job: &str, commit: &str) -> bool {
            self.0.contains(&(project.into(), pr, job.into(), commit.into()))
        }
    }

    /// What `decide` may hand to Jenkins, and from there to git.
    fn check_spec(g: &Gen, spec: &RunSpec) -> Result<(), TestCaseError> {
        prop_assert!(valid_branch(&spec.branch) && valid_branch(&spec.branch_to), "{spec:?}");
        prop_assert_eq!((&spec.branch, &spec.branch_to), (&g.branch_from, &g.branch));
        prop_assert!(!spec.repo.starts_with('-'), "{:?}", spec);
        let from_pagure = spec.repo.starts_with("https://pagure.io/");
        let remote = url::Url::parse(&spec.repo).is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "git") && u.as_str() == spec.repo);
        prop_assert!(from_pagure || remote, "{:?}", spec);
        match &g.source {
            Src::Same => prop_assert_eq!(&spec.repo, &format!("https://pagure.io/{}.git", g.path())),
            Src::Fork(user) => prop_assert_eq!(&spec.repo, &format!("https://pagure.io/forks/{user}/{}.git", g.path())),
            Src::Remote(url) => prop_assert!(&spec.repo == url && remote, "{:?}", spec),
        }
        prop_assert_eq!((&spec.project, spec.pr, &spec.commit), (&g.path(), g.id, &g.commit));
        Ok(())
    }

    proptest! {
        /// (a) Never a build for a PR that is not open, for an unconfigured
        /// project, or for a PR whose target is a fork; (d) never a trigger
        /// from a person's comment, nor from poormanci's own echo.
        #[test]
        fn no_build_where_none_is_due(g in gen()) {
            let cfg = config();
            let d = decide(&cfg, &g.message(), &Built::default());
            let builds = matches!(d, Decision::Trigger { .. } | Decision::Commands { .. });
            if !g.open() || !cfg.projects.contains_key(&g.path()) || g.target_is_fork || g.agent == Some("cibot") {
                prop_assert!(!builds, "{:?} from {:?}", d, g);
            }
            if g.action == "comment.added" && g.comments.last().is_some_and(|c| !c.1) {
                prop_assert!(!matches!(d, Decision::Trigger { .. }), "a person's comment triggered: {:?}", g);
            }
            if matches!(d, Decision::Commands { .. }) {
                prop_assert!(g.action == "comment.added" && g.comments.last().is_some_and(|c| !c.1), "{:?}", g);
            }
        }

        /// (b) Every triggered run (and every command's spec) carries git-safe
        /// branches and a repo URL from Pagure or a plain http(s)/git URL.
        #[test]
        fn runs_are_safe_to_hand_to_git(g in gen()) {
            let cfg = config();
            match decide(&cfg, &g.message(), &Built::default()) {
                Decision::Trigger { runs, author } => {
                    prop_assert_eq!(author.as_str(), g.author);
                    let jobs: Vec<&str> = runs.iter().map(|r| r.job.as_str()).collect();
                    let configured: Vec<&str> = cfg.projects[&g.path()].iter().map(|j| j.job.as_str()).collect();
                    prop_assert_eq!(jobs, configured);
                    for run in &runs {
                        check_spec(&g, run)?;
                    }
                }
                Decision::Commands { spec, .. } => check_spec(&g, &spec)?,
                _ => {}
            }
        }

        /// (c) Messages in any order, each triggered run recorded as the
        /// engine records it: no (project, PR, job, commit) is built twice.
        #[test]
        fn one_build_per_commit_and_job(
            gens in vec(gen(), 1..16),
            picks in vec((1..4u64, 0..4usize, any::<bool>()), 16),
        ) {
            let cfg = config();
            let commits = [None, Some("a".repeat(40)), Some("b".repeat(40)), Some("c".repeat(40))];
            let mut built = Built::default();
            for (mut g, (id, c, open)) in gens.into_iter().zip(picks) {
                // Few PRs and commits, mostly open, so that repeats happen.
                g.id = id;
                g.commit = commits[c].clone();
                if open {
                    g.status = json!("Open");
                    g.target_is_fork = false;
                    g.agent = None;
                }
                if let Decision::Trigger { runs, .. } = decide(&cfg, &g.message(), &built) {
                    for run in runs {
                        if let Some(commit) = run.commit {
                            let key = (run.project, run.pr, run.job, commit);
                            prop_assert!(!built.0.contains(&key), "built twice: {:?}", key);
                            built.0.insert(key);
                        }
                    }
                }
            }
        }

        #[test]
        fn short_cuts_on_a_char_boundary(s in "\\PC{0,16}") {
            let cut = short(Some(&s));
            prop_assert!(s.starts_with(cut) && cut.chars().count() <= 8);
        }
    }

    /// The generator reaches every kind of decision, so that the properties
    /// above are not vacuous.
    #[test]
    fn generator_reaches_every_rule() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let cfg = config();
        let mut runner = TestRunner::deterministic();
        let mut kinds = std::collections::BTreeMap::new();
        for _ in 0..1000 {
            let g = gen().new_tree(&mut runner).unwrap().current();
            let kind = match decide(&cfg, &g.message(), &Built::default()) {
                Decision::Ignore(_) => "ignore",
                Decision::Refuse(_) => "refuse",
                Decision::Trigger { .. } if g.action == "comment.added" => "trigger by notice",
                Decision::Trigger { .. } => "trigger",
                Decision::Commands { .. } => "commands",
                Decision::BuildFinished { .. } => "build finished",
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        for kind in ["ignore", "refuse", "trigger", "trigger by notice", "commands"] {
            assert!(kinds.get(kind).copied().unwrap_or(0) >= 5, "{kind}: {kinds:?}");
        }
    }
}
