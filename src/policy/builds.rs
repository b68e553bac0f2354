//! Which Jenkins build is a run's, whether it built what was asked, and
//! what its end means. Jenkins' answers come in as `BuildInfo`; nothing
//! here talks to Jenkins.

use crate::http;
use crate::jenkins::{BuildInfo, COMMIT, NOT_PARAMETERS};

use super::Outcome;

/// Why a build is taken as a run's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// It came from the queue item poormanci's trigger was given.
    QueueId,
    /// Its remote cause is the run's note and it ran with the parameters
    /// sent (a trigger whose queue item was never learnt: a lost answer,
    /// a 303 without a usable Location).
    CauseAndParameters,
}

/// Is `build` the run's? By its queue item when poormanci knows it (the
/// only proof Jenkins gives), else by its cause *and* its parameters: a
/// note alone can be typed by anyone with the job's token.
pub fn identify(build: &BuildInfo, queue_id: Option<u64>, cause: &str, sent: &[(&str, &str)]) -> Option<Identity> {
    match queue_id {
        Some(q) => (build.queue_id == Some(q)).then_some(Identity::QueueId),
        None => (build.note.as_deref() == Some(cause) && built_what_was_asked("", sent, build).is_ok()).then_some(Identity::CauseAndParameters),
    }
}

/// The run's build among `builds` (a job's recent builds), as [`identify`] says.
pub fn find_build<'a>(builds: &'a [BuildInfo], queue_id: Option<u64>, cause: &str, sent: &[(&str, &str)]) -> Option<&'a BuildInfo> {
    builds.iter().find(|b| identify(b, queue_id, cause, sent).is_some())
}

/// The build among `builds` that came from queue item `queue_id`.
pub fn build_of_queue_item(builds: &[BuildInfo], queue_id: u64) -> Option<&BuildInfo> {
    builds.iter().find(|b| b.queue_id == Some(queue_id))
}

/// A build that ran with what was asked, or nearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltAsAsked {
    Exactly,
    /// The job does not define COMMIT (an older job): it built whatever
    /// BRANCH pointed at when it ran. Accepted; the caller warns once per job.
    WithoutCommit,
}

/// Did Jenkins build what poormanci sent? Jenkins drops parameters a job
/// does not define and fills in defaults (`ParametersDefinitionProperty`),
/// so a job without REPO/BRANCH quietly tests its default branch: its
/// result says nothing about the pull request.
pub fn built_what_was_asked(job: &str, sent: &[(&str, &str)], got: &BuildInfo) -> Result<BuiltAsAsked, String> {
    let sent = sent.iter().filter(|(name, _)| !NOT_PARAMETERS.contains(name));
    let mut missing = Vec::new();
    for (name, value) in sent {
        match got.parameters.iter().find(|p| p.name == *name) {
            None => missing.push(*name),
            Some(p) if p.value.as_deref() == Some(*value) => {}
            Some(p) => {
                return Err(format!(
                    "build {} of job {job} ran with {name}={}, not {}: it did not build this pull request",
                    got.number,
                    http::detail(p.value.as_deref().unwrap_or("(no value)")),
                    http::detail(value),
                ))
            }
        }
    }
    match missing.as_slice() {
        [] => Ok(BuiltAsAsked::Exactly),
        [COMMIT] => Ok(BuiltAsAsked::WithoutCommit),
        names => Err(format!(
            "job {job} does not define {}: it did not build this pull request",
            names.iter().filter(|n| **n != COMMIT).copied().collect::<Vec<_>>().join("/")
        )),
    }
}

/// Whether a run's cancel may take its queue item (or build) out of Jenkins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdraw {
    Go,
    /// Another open run shares the item: cancelling it would cancel theirs.
    Keep { for_run: i64 },
}

/// `sharing`: the other open runs Jenkins gave the same queue item.
pub fn withdraw(sharing: &[i64]) -> Withdraw {
    match sharing.last() {
        Some(&for_run) => Withdraw::Keep { for_run },
        None => Withdraw::Go,
    }
}

/// What a build says about the run, once it is over: None while it is
/// still building (a result set then may still change). A build that did
/// not build what was asked is an error, never a success.
pub fn verdict(job: &str, sent: &[(&str, &str)], build: &BuildInfo) -> Option<(Outcome, Option<BuiltAsAsked>)> {
    let result = build.final_result()?;
    Some(match built_what_was_asked(job, sent, build) {
        Ok(how) => (Outcome::Finished { number: build.number, url: build.url.clone(), result: result.as_str().to_string() }, Some(how)),
        Err(why) => (Outcome::WrongBuild { number: build.number, url: build.url.clone(), why }, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jenkins::{trigger_parameters, BuildResult, Parameter, BRANCH, BRANCH_TO, REPO};

    fn build_info(number: u64, building: bool, result: Option<&str>) -> BuildInfo {
        BuildInfo {
            number,
            url: format!("https://jenkins.example.org/job/pungi-pr/{number}/"),
            queue_id: None,
            result: result.map(BuildResult::parse),
            building,
            note: None,
            causes: vec![],
            parameters: vec![],
            timestamp_ms: None,
            duration_ms: None,
            estimated_duration_ms: None,
        }
    }

    fn built_with(params: &[(&str, &str)]) -> BuildInfo {
        let mut b = build_info(7, false, Some("SUCCESS"));
        b.parameters = params.iter().map(|(n, v)| Parameter { name: n.to_string(), value: Some(v.to_string()) }).collect();
        b
    }

    #[test]
    fn built_what_was_asked_checks_parameters() {
        let sent = trigger_parameters("https://pagure.io/pungi/pull-request/235 [poormanci run 3]", "https://r", "fix", "master", Some("abc"));
        let all = [(REPO, "https://r"), (BRANCH, "fix"), (BRANCH_TO, "master"), (COMMIT, "abc")];
        assert_eq!(built_what_was_asked("pungi-pr", &sent, &built_with(&all)), Ok(BuiltAsAsked::Exactly));
        // Extra parameters the job defines (with their defaults) do not matter.
        let extra = [(REPO, "https://r"), (BRANCH, "fix"), (BRANCH_TO, "master"), (COMMIT, "abc"), ("CLEAN", "true")];
        assert_eq!(built_what_was_asked("pungi-pr", &sent, &built_with(&extra)), Ok(BuiltAsAsked::Exactly));
        // An older job without COMMIT: accepted, the caller warns.
        let old_job = [(REPO, "https://r"), (BRANCH, "fix"), (BRANCH_TO, "master")];
        assert_eq!(built_what_was_asked("pungi-pr", &sent, &built_with(&old_job)), Ok(BuiltAsAsked::WithoutCommit));
        // Jenkins dropped REPO and BRANCH: the job tested its default branch.
        let no_repo = [(BRANCH_TO, "master"), (COMMIT, "abc")];
        assert_eq!(
            built_what_was_asked("pungi-pr", &sent, &built_with(&no_repo)),
            Err("job pungi-pr does not define REPO/BRANCH: it did not build this pull request".into())
        );
        assert_eq!(
            built_what_was_asked("pungi-pr", &sent, &built_with(&[])),
            Err("job pungi-pr does not define REPO/BRANCH/BRANCH_TO: it did not build this pull request".into())
        );
        // Another build's parameters.
        let other = [(REPO, "https://r"), (BRANCH, "master"), (BRANCH_TO, "master"), (COMMIT, "abc")];
        assert_eq!(
            built_what_was_asked("pungi-pr", &sent, &built_with(&other)),
            Err("build 7 of job pungi-pr ran with BRANCH=master, not fix: it did not build this pull request".into())
        );
        // Without a known commit, COMMIT is not asked for.
        let sent = trigger_parameters("n", "https://r", "fix", "master", None);
        assert_eq!(built_what_was_asked("pungi-pr", &sent, &built_with(&old_job)), Ok(BuiltAsAsked::Exactly));
    }

    #[test]
    fn a_result_while_building_is_no_verdict() {
        let sent = trigger_parameters("n", "https://r", "fix", "master", None);
        let params = [(REPO, "https://r"), (BRANCH, "fix"), (BRANCH_TO, "master")];
        let mut b = built_with(&params);
        b.building = true;
        assert_eq!(verdict("pungi-pr", &sent, &b), None);
        b.building = false;
        b.result = Some(BuildResult::Failure);
        let (outcome, how) = verdict("pungi-pr", &sent, &b).unwrap();
        assert_eq!(how, Some(BuiltAsAsked::Exactly));
        assert!(matches!(outcome, Outcome::Finished { ref result, .. } if result == "FAILURE"));
        // Parameters dropped by Jenkins: an error, whatever the result.
        b.result = Some(BuildResult::Success);
        b.parameters.retain(|p| p.name == BRANCH_TO);
        assert!(matches!(verdict("pungi-pr", &sent, &b), Some((Outcome::WrongBuild { .. }, None))));
    }

    #[test]
    fn a_build_is_the_runs_by_queue_id_or_by_cause_and_parameters() {
        let cause = "https://pagure.io/pungi/pull-request/1 [poormanci run 4]";
        let sent = trigger_parameters(cause, "https://r", "fix", "master", Some("abc"));
        let params = [(REPO, "https://r"), (BRANCH, "fix"), (BRANCH_TO, "master"), (COMMIT, "abc")];
        let mut ours = built_with(&params);
        ours.queue_id = Some(12);
        ours.note = Some(cause.into());
        assert_eq!(identify(&ours, Some(12), cause, &sent), Some(Identity::QueueId));
        // Known queue item: nothing else counts, not even the right note.
        assert_eq!(identify(&ours, Some(13), cause, &sent), None);
        assert_eq!(identify(&ours, None, cause, &sent), Some(Identity::CauseAndParameters));
        // The note alone is not enough: anyone with the token can write it.
        let mut forged = ours.clone();
        forged.parameters[1].value = Some("evil".into());
        assert_eq!(identify(&forged, None, cause, &sent), None);
        let builds = [forged, ours];
        assert_eq!(find_build(&builds, None, cause, &sent).map(|b| b.number), Some(7));
        assert_eq!(build_of_queue_item(&builds, 12).map(|b| b.queue_id), Some(Some(12)));
    }
}
