//! What a person is told about a run: its state in words and a colour, why
//! it waits or how it ended, what is being retried, where to look. Pure:
//! the same view feeds the HTML pages and the JSON API.

use serde::Serialize;
use url::Url;

use crate::config::Config;
use crate::jenkins::BuildResult;
use crate::policy::Outcome;
use crate::web::read::{RunRow, TaskRow};
use crate::work::{RunState, Work};

/// What the pages need from the config: where they live, what to hide.
pub struct Site {
    pub cfg: std::sync::Arc<Config>,
    /// "/poormanci" behind a proxy at https://host/poormanci, "" at the root.
    pub base: String,
    /// Every credential in the config: never shown, even inside an error a peer sent back.
    secrets: Vec<String>,
}

impl Site {
    pub fn new(cfg: std::sync::Arc<Config>) -> Site {
        let mut secrets = vec![cfg.pagure.token.expose().to_string()];
        secrets.extend(cfg.jenkins.auth.iter().map(|(_, t)| t.expose().to_string()));
        secrets.extend(cfg.projects.values().flatten().map(|j| j.token.expose().to_string()));
        secrets.retain(|s| !s.is_empty());
        // Longest first: a token that contains another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Site { base: cfg.web.base_path(), cfg, secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
    }

    /// The status page of a PR, as a path under this site.
    pub fn pr_page(&self, project: &str, pr: u64) -> String {
        format!("{}/{project}/pull-request/{pr}", self.base)
    }
}

/// The PR's status page as people reach it, when `public_url` is set: where
/// a flag that is still waiting points.
pub fn public_pr_page(cfg: &Config, project: &str, pr: u64) -> Option<String> {
    let base = cfg.web.public_url.as_ref()?;
    Some(format!("{}/{project}/pull-request/{pr}", base.as_str().trim_end_matches('/')))
}

/// A link only when it is a plain http(s) URL, shown without any credentials
/// it may carry: text from the bus or a peer never becomes a `javascript:` link.
pub fn safe_link(url: &str) -> Option<String> {
    let mut u = Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let _ = u.set_username("");
    let _ = u.set_password(None);
    Some(u.to_string())
}

#[derive(Debug, Clone, Serialize)]
pub struct Retry {
    /// The request being retried: trigger, flag, comment, report, trust, cancel, lookup.
    pub kind: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_try: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Links {
    /// This run's PR on the status page.
    pub page: String,
    pub pagure: Option<String>,
    /// The build, or the job while there is no build yet.
    pub jenkins: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRow,
    /// The state in words: "passed", "waiting for /ok-to-test", "retrying", …
    pub status: String,
    /// The colour class: success, failure, error, cancelled, superseded, waiting, queued, running, retrying.
    pub colour: &'static str,
    /// Why it waits, or how it ended, in a sentence.
    pub detail: String,
    pub retry: Option<Retry>,
    pub superseded_by: Option<i64>,
    /// Seconds from the build's start to its end, once both are known.
    pub duration: Option<f64>,
    pub links: Links,
}

pub fn run_view(site: &Site, run: RunRow, tasks: &[TaskRow], next: Option<(i64, Option<String>)>) -> RunView {
    let retry = tasks.iter().find(|t| t.attempts > 0 && t.kind != Work::FOLLOW).map(|t| Retry {
        kind: t.kind.clone(),
        attempts: t.attempts,
        last_error: t.last_error.as_deref().map(|e| site.redact(e)),
        next_try: t.next_try,
    });
    let has = |kind: &str| tasks.iter().any(|t| t.kind == kind);
    let ok_to_test = &site.cfg.commands.ok_to_test;
    let author = run.author.clone().unwrap_or_else(|| "the author".into());
    let (status, colour, detail): (String, &'static str, String) = match RunState::parse(&run.state).unwrap_or(RunState::Done) {
        RunState::Gated if has(Work::TRUST) => ("checking trust".into(), "waiting", format!("Asking Pagure whether {author} is trusted")),
        RunState::Gated => (format!("waiting for {ok_to_test}"), "waiting", format!("Waiting for a trusted person to comment {ok_to_test}")),
        RunState::Triggering if retry.as_ref().is_some_and(|r| r.kind == Work::TRIGGER) => {
            ("retrying".into(), "retrying", "Jenkins has not taken the build yet; trying again".into())
        }
        RunState::Triggering => ("starting".into(), "queued", "Sending the build to Jenkins".into()),
        RunState::Queued => {
            let item = run.queue_item.map(|q| format!(" (item {q})")).unwrap_or_default();
            ("queued".into(), "queued", format!("Waiting in the Jenkins queue{item}"))
        }
        RunState::Running => ("running".into(), "running", format!("Build #{} running", run.build.unwrap_or_default())),
        RunState::Done => ended(site, &run, next.as_ref()),
    };
    let duration = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) if f >= s && run.build.is_some() => Some(f - s),
        _ => None,
    };
    let job_url = crate::jenkins::job_url(&site.cfg.jenkins.peer.url, &run.job);
    let links = Links {
        page: site.pr_page(&run.project, run.pr),
        pagure: safe_link(&run.pr_url),
        jenkins: run.build_url.as_deref().and_then(safe_link).or_else(|| safe_link(&job_url)),
    };
    let superseded_by = next.filter(|_| status == "superseded").map(|(id, _)| id);
    RunView { status, colour, detail, retry, superseded_by, duration, links, run }
}

fn ended(site: &Site, run: &RunRow, next: Option<&(i64, Option<String>)>) -> (String, &'static str, String) {
    let Some(outcome) = run.outcome.clone().and_then(|o| serde_json::from_value::<Outcome>(o).ok()) else {
        return ("ended".into(), "error", "Ended; how is not recorded".into());
    };
    let words = |s: &str, c: &'static str, d: String| (s.to_string(), c, d);
    match outcome {
        Outcome::Finished { number, result, .. } => {
            let (word, colour) = match BuildResult::parse(&result) {
                BuildResult::Success => ("passed", "success"),
                BuildResult::Unstable => ("unstable", "failure"),
                BuildResult::Failure => ("failed", "failure"),
                BuildResult::Aborted => ("aborted", "cancelled"),
                BuildResult::NotBuilt => ("not built", "error"),
                BuildResult::Other(_) => ("unknown result", "error"),
            };
            words(word, colour, format!("Build #{number} {word}"))
        }
        Outcome::QueueCancelled => words("cancelled", "cancelled", "Cancelled in the Jenkins queue".into()),
        Outcome::NotStarted { after_secs } => words("timed out", "error", format!("Did not start within {}", duration_words(after_secs as f64))),
        Outcome::NotFinished { number, after_secs, .. } => {
            words("timed out", "error", format!("Build #{number} did not finish within {}", duration_words(after_secs as f64)))
        }
        Outcome::TriggerFailed { why } => words("could not start", "error", format!("Jenkins did not take the build: {}", site.redact(&why))),
        Outcome::Lost { why } => words("lost", "error", format!("Lost track of the build: {}", site.redact(&why))),
        Outcome::WrongBuild { number, why, .. } => words("wrong build", "error", format!("Build #{number} did not build what was asked: {}", site.redact(&why))),
        Outcome::Superseded => {
            let by = match next {
                Some((id, commit)) => format!(" (run {id}, commit {})", crate::policy::short(commit.as_deref())),
                None => String::new(),
            };
            words("superseded", "superseded", format!("Superseded by a newer build{by}"))
        }
    }
}

/// "42 s", "3 min 05 s", "2 h 10 min", "3 d 4 h".
pub fn duration_words(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        3600..86400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// "2026-11-30 09:41:02 UTC".
pub fn time_words(epoch: f64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(epoch as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "-".into(),
    }
}

/// "11-30 09:41:02", for tables (the full form is its tooltip).
pub fn short_time_words(epoch: f64) -> String {
    time_words(epoch)[5..19].to_string()
}

/// "2026-11-30" for the day number `day` (days since the epoch).
pub fn day_words(day: i64) -> String {
    time_words(day as f64 * 86400.0)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_http_only_and_without_credentials() {
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link("https://u:p@j.example/job/x/1/").as_deref(), Some("https://j.example/job/x/1/"));
    }

    #[test]
    fn words_for_durations_and_times() {
        assert_eq!(duration_words(5.4), "5 s");
        assert_eq!(duration_words(185.0), "3 min 05 s");
        assert_eq!(duration_words(7800.0), "2 h 10 min");
        assert_eq!(time_words(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(day_words(1), "1970-01-02");
    }
}
