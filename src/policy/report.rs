//! What a run's end says on the PR: the flag, the comment, the uid, and
//! the note that ties a Jenkins build to its run.

use crate::config::Config;
use crate::jenkins::BuildResult;
use crate::pagure::{Flag, FlagStatus};

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

/// The flag's uid: one flag per project, PR and job, updated in place from
/// pending to its result. Pagure keys a PR's flags by (head commit, uid), so
/// two PRs with the same head (one branch proposed to `master` and to `f40`)
/// need different uids, or each overwrites the other's check. Pagure allows
/// 32 characters; project and job paths can be longer, hence a hash of the
/// three (FNV-1a: stable across releases, unlike std's hasher).
pub fn flag_uid(project: &str, pr: u64, job: &str) -> String {
    format!("poormanci-{:016x}", fnv1a(format!("{project}\n{pr}\n{job}").as_bytes()))
}

/// The uid of release 0.1.0, from the job alone: a run recorded by it keeps
/// it, so its flag is still updated in place after an upgrade.
pub fn legacy_flag_uid(job: &str) -> String {
    format!("poormanci-{:016x}", fnv1a(job.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
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
    /// The build ended but did not build what was sent (Jenkins dropped
    /// parameters the job does not define): its result says nothing.
    WrongBuild { number: u64, url: String, why: String },
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
    pub flag: Option<Flag>,
    pub comment: Option<String>,
}

/// A flag still waiting links to the PR's status page when there is one
/// (`status_page`, from `poormanci.web.public_url`): it says why it waits.
pub fn pending_queued(job_url: &str, status_page: Option<&str>) -> Flag {
    Flag { status: FlagStatus::Pending, percent: None, text: "Build queued".into(), url: status_page.unwrap_or(job_url).into() }
}

pub fn pending_approval(cfg: &Config, pr_url: &str, status_page: Option<&str>) -> Flag {
    Flag {
        status: FlagStatus::Pending,
        percent: None,
        text: format!("Waiting for a trusted person to comment {}", cfg.commands.ok_to_test),
        url: status_page.unwrap_or(pr_url).into(),
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

pub fn pending_running(number: u64, url: &str) -> Flag {
    Flag { status: FlagStatus::Pending, percent: None, text: format!("Build {number} running"), url: url.into() }
}

/// The flag that closes a run's pending flag left on its `commit` once the
/// PR has moved on to `newer`: Pagure keeps flags per (commit, uid), and its
/// PR endpoint only reaches the head, so the old one stays pending unless
/// set again on that commit. None when there is no older commit to close.
pub fn stale_flag(commit: Option<&str>, newer: Option<&str>, pr_url: &str) -> Option<(String, Flag)> {
    let (old, new) = (commit?, newer?);
    let text = format!("Superseded by commit {}", short(Some(new)));
    (old != new).then(|| (old.to_string(), Flag { status: FlagStatus::Canceled, percent: None, text, url: pr_url.into() }))
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
        Head::Same => Some(Flag { status, percent, text, url }),
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
            (status, percent, format!("Build {number} {word}{of}"), url.clone())
        }
        Outcome::QueueCancelled => (FlagStatus::Canceled, None, format!("Build cancelled in the Jenkins queue{of}"), job_url.into()),
        Outcome::NotStarted { after_secs } => {
            (FlagStatus::Error, None, format!("Build did not start within {}{of}", human(*after_secs)), job_url.into())
        }
        Outcome::NotFinished { number, url, after_secs } => {
            (FlagStatus::Error, None, format!("Build {number} did not finish within {}{of}", human(*after_secs)), url.clone())
        }
        Outcome::TriggerFailed { why } => (FlagStatus::Error, None, format!("Could not start a build{of}: {why}"), job_url.into()),
        Outcome::Lost { why } => (FlagStatus::Error, None, format!("Lost track of the build{of}: {why}"), job_url.into()),
        Outcome::Superseded => (FlagStatus::Canceled, None, format!("Superseded by a newer commit{of}"), job_url.into()),
        Outcome::WrongBuild { number, url, why } => (FlagStatus::Error, None, format!("Build {number} is not a test of this pull request{of}: {why}"), url.clone()),
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config;

    #[test]
    fn a_waiting_flag_links_to_the_status_page_when_there_is_one() {
        let cfg = config();
        let (job, pr, page) = ("https://jenkins/job/x/", "https://pagure/p/pull-request/1", "https://ci/p/pull-request/1");
        assert_eq!(pending_queued(job, None).url, job);
        assert_eq!(pending_queued(job, Some(page)).url, page);
        assert_eq!(pending_approval(&cfg, pr, None).url, pr);
        assert_eq!(pending_approval(&cfg, pr, Some(page)).url, page);
    }

    #[test]
    fn cause_round_trip() {
        let url = "https://pagure.io/pungi/pull-request/235";
        assert_eq!(run_in_note(&cause(url, 42)), Some(42));
        assert_eq!(run_in_note("203"), None);
        assert_eq!(run_in_note("x [poormanci run 4x]"), None);
    }

    #[test]
    fn flag_uid_is_short_stable_and_per_pr() {
        assert_eq!(flag_uid("pungi", 1, "pungi-pr"), flag_uid("pungi", 1, "pungi-pr"));
        // Same job, same head commit, another PR or project: another flag.
        assert_ne!(flag_uid("pungi", 1, "pungi-pr"), flag_uid("pungi", 5, "pungi-pr"));
        assert_ne!(flag_uid("pungi", 1, "pungi-pr"), flag_uid("rpms/pungi", 1, "pungi-pr"));
        assert_ne!(flag_uid("pungi", 1, "pungi-pr"), flag_uid("pungi", 1, "pungi-pr2"));
        assert!(flag_uid(&"x/".repeat(100), u64::MAX, &"x/".repeat(100)).len() <= 32);
        // Release 0.1.0's value, pinned: its runs keep it.
        assert_eq!(legacy_flag_uid("pungi-pr"), "poormanci-d8dced95d1428cc9");
    }

    #[test]
    fn results_map_to_flags() {
        let cfg = config();
        let report = |result: &str| {
            let o = Outcome::Finished { number: 149, url: "http://j.example.org/job/p/149/".into(), result: result.into() };
            final_report(&cfg, "p", "http://j.example.org/job/p/", Some("3f2a9c1e77"), &o, &Head::Same).flag.unwrap()
        };
        let ok = report("SUCCESS");
        assert_eq!((ok.status, ok.percent, ok.text.as_str()), (FlagStatus::Success, Some(100), "Build 149 successful (commit 3f2a9c1e)"));
        assert_eq!(report("FAILURE").status, FlagStatus::Failure);
        assert_eq!(report("UNSTABLE").status, FlagStatus::Failure);
        assert_eq!(report("ABORTED").status, FlagStatus::Canceled);
        assert_eq!(report("NOT_BUILT").status, FlagStatus::Error);
        assert_eq!(report("WEIRD").status, FlagStatus::Error);
    }

    /// Pagure's markdown links a bare `#N` to issue or PR N of the project.
    #[test]
    fn no_bare_number_sign_in_texts() {
        let cfg = config();
        let url = "http://j.example.org/job/p/12/";
        let outcomes = [
            Outcome::Finished { number: 12, url: url.into(), result: "SUCCESS".into() },
            Outcome::QueueCancelled,
            Outcome::NotStarted { after_secs: 60 },
            Outcome::NotFinished { number: 12, url: url.into(), after_secs: 60 },
            Outcome::TriggerFailed { why: "403".into() },
            Outcome::Lost { why: "gone".into() },
            Outcome::Superseded,
        ];
        let heads = [Head::Same, Head::MovedOn { head: "bbbbbbbbbb".into(), rebuilding: true }];
        let mut texts = vec![pending_running(12, url).text, pending_queued(url, None).text, pending_approval(&cfg, url, None).text, approval_notice(&cfg)];
        for o in &outcomes {
            for h in &heads {
                let r = final_report(&cfg, "p", "http://j.example.org/job/p/", Some("aaaaaaaaaa"), o, h);
                texts.extend(r.flag.map(|f| f.text));
                texts.extend(r.comment);
            }
        }
        let bare = regex::Regex::new(r"#[0-9]").unwrap();
        assert!(texts.iter().all(|t| !bare.is_match(t)), "{texts:#?}");
    }

    #[test]
    fn a_stale_flag_is_closed_on_its_own_commit() {
        let (commit, flag) = stale_flag(Some("aaaaaaaaaa"), Some("bbbbbbbbbb"), "https://p.example.org/x/pull-request/1").unwrap();
        assert_eq!((commit.as_str(), flag.status, flag.text.as_str()), ("aaaaaaaaaa", FlagStatus::Canceled, "Superseded by commit bbbbbbbb"));
        assert_eq!(stale_flag(Some("aaaaaaaaaa"), Some("aaaaaaaaaa"), "u"), None, "a rebuild of the same commit");
        assert_eq!(stale_flag(None, Some("aaaaaaaaaa"), "u"), None);
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
}
