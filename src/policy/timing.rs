//! How often to poll, how long to retry, when to give up waiting.

use std::time::Duration;

use super::report::Outcome;
use crate::config::Config;
use crate::work::Work;


/// Delay before a followed job is looked at again, after a look that took
/// `requests` requests: every poll_interval (one request answers for all
/// of a job's builds, so this does not grow with them), stretched so that
/// following stays under the ceiling of requests per second.
pub fn poll_delay(cfg: &Config, requests: usize) -> Duration {
    let interval = cfg.jenkins.poll_interval.as_secs_f64();
    Duration::from_secs_f64(interval.max(requests as f64 / cfg.jenkins.max_requests_per_second))
}

/// Delay before retry number `attempt` of a failed request: exponential from
/// 1 s up to 5 min, with jitter (`jitter` in 0..1) so that many retries
/// after an outage do not all land at once.
pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let full = (2_f64.powi(attempt.min(20) as i32)).min(300.0);
    Duration::from_secs_f64(full * (0.5 + jitter.clamp(0.0, 1.0) / 2.0))
}

/// A run still in the Jenkins queue past `queue_timeout` ends as an error.
pub fn queue_timed_out(cfg: &Config, created: f64, now: f64) -> Option<Outcome> {
    let limit = cfg.jenkins.queue_timeout;
    (now - created > limit.as_secs_f64()).then_some(Outcome::NotStarted { after_secs: limit.as_secs() })
}

/// A build still running past `build_timeout` (from its start) ends as an error.
pub fn build_timed_out(cfg: &Config, started: f64, now: f64, number: u64, url: &str) -> Option<Outcome> {
    let limit = cfg.jenkins.build_timeout;
    (now - started > limit.as_secs_f64()).then(|| Outcome::NotFinished { number, url: url.into(), after_secs: limit.as_secs() })
}

/// What a task that failed for good means for its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GivenUp {
    /// The run ends with this outcome (and is reported).
    Finish(Outcome),
    /// The trust question has no answer: not knowing is not trusting.
    NotTrusted,
    /// The PR's head is unknown: report as if it had not moved (a result
    /// is better than none).
    ReportAsIs,
    /// Nothing more to do (a flag, comment or cancel is lost; logged).
    Drop,
    /// Pagure did not confirm the PR (unknown, or no answer): its runs are
    /// not built.
    NotBuilt,
}

pub fn given_up(work: &Work, why: &str) -> GivenUp {
    match work {
        Work::Trigger => GivenUp::Finish(Outcome::TriggerFailed { why: why.to_string() }),
        Work::Follow { .. } => GivenUp::Finish(Outcome::Lost { why: why.to_string() }),
        Work::Trust { .. } => GivenUp::NotTrusted,
        Work::Confirm { .. } => GivenUp::NotBuilt,
        Work::CheckHeadThenReport { .. } => GivenUp::ReportAsIs,
        Work::Cancel | Work::Flag(_) | Work::Comment { .. } | Work::Lookup { .. } | Work::CloseStaleFlag { .. } => GivenUp::Drop,
    }
}

/// Whether work Pagure refused for authorization (401, 403) is kept until
/// the token works: the reports and the questions they hang on (a build
/// waits on Pagure's `Confirm` too). A bad or
/// expired token is fixed by a person, often days later; a result dropped
/// meanwhile is lost for good. Closing an old commit's stale flag is a
/// nicety that needs an ACL poormanci does not require: not kept.
pub fn waits_for_token(work: &Work) -> bool {
    match work {
        Work::Flag(_) | Work::Comment { .. } | Work::CheckHeadThenReport { .. } | Work::Trust { .. } | Work::Confirm { .. } => true,
        Work::Trigger | Work::Cancel | Work::Follow { .. } | Work::Lookup { .. } | Work::CloseStaleFlag { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let cfg = config();
        assert_eq!(poll_delay(&cfg, 1), cfg.jenkins.poll_interval);
        // 100 jobs in flight at 20 requests per second: each every 5 s.
        assert_eq!(poll_delay(&cfg, 100), Duration::from_secs(100) / cfg.jenkins.max_requests_per_second as u32);
        assert!(retry_delay(0, 0.0) >= Duration::from_millis(500));
        assert!(retry_delay(100, 1.0) <= Duration::from_secs(300));
    }
}
