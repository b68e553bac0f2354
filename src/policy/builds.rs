//! Which Jenkins build is a run's, whether it built what was asked, and
//! what its end means. Anyone holding a job's trigger token can start a
//! build and copy poormanci's cause note into it; its result must not land
//! on a pull request. Jenkins' answers come in as `BuildInfo`; nothing here
//! talks to Jenkins.

use super::report::cause;
use super::trigger::RunSpec;
use super::Outcome;
use crate::config::JobConfig;
use crate::http;
use crate::jenkins::{BuildInfo, BRANCH, BRANCH_TO, COMMIT, NOT_PARAMETERS, REPO};
use crate::work::RunState;

/// What poormanci sends with a trigger besides the token: the cause note
/// first (Jenkins keeps it as the remote cause, not as a parameter), then
/// `REPO`, `BRANCH`, `BRANCH_TO`, `COMMIT` when known, and the job's own
/// static parameters (none when the job is no longer configured).
pub fn trigger_parameters(job: Option<&JobConfig>, run: i64, spec: &RunSpec) -> Vec<(String, String)> {
    let mut params = vec![
        ("cause".to_string(), cause(&spec.pr_url, run)),
        (REPO.into(), spec.repo.clone()),
        (BRANCH.into(), spec.source_branch.clone()),
        (BRANCH_TO.into(), spec.target_branch.clone()),
    ];
    params.extend(spec.commit.iter().map(|c| (COMMIT.to_string(), c.clone())));
    params.extend(job.into_iter().flat_map(|j| j.parameters.iter().cloned()));
    params
}

/// Why a build is taken as a run's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// It came from the queue item poormanci's trigger was given.
    QueueId,
    /// Its remote cause is the run's note and it ran with every parameter
    /// sent (a trigger whose queue item was never learnt: a lost answer, a
    /// 303 without a usable Location; or a build that does not say its
    /// queue item).
    CauseAndParameters,
}

/// Is `build` the run's? By its queue item when both sides know it (the
/// only proof Jenkins gives), else by its cause *and* every parameter
/// sent: a note alone can be typed by anyone with the job's token.
/// `sent` is what [`trigger_parameters`] gives, cause first.
pub fn identify(build: &BuildInfo, queue_id: Option<u64>, sent: &[(String, String)]) -> Option<Identity> {
    if let (Some(ours), Some(its)) = (queue_id, build.queue_id) {
        return (ours == its).then_some(Identity::QueueId);
    }
    let cause = sent.iter().find(|(k, _)| k == "cause").map(|(_, v)| v.as_str());
    (cause.is_some() && build.note.as_deref() == cause && built_what_was_asked("", sent, build) == Ok(BuiltAsAsked::Exactly))
        .then_some(Identity::CauseAndParameters)
}

/// The run's build among `builds` (a job's recent builds), as [`identify`] says.
pub fn find_build<'a>(builds: &'a [BuildInfo], queue_id: Option<u64>, sent: &[(String, String)]) -> Option<&'a BuildInfo> {
    builds.iter().find(|b| identify(b, queue_id, sent).is_some())
}

/// What poormanci knows of a run that a build might belong to.
#[derive(Debug, Clone, Copy)]
pub struct Claimed<'a> {
    pub run: i64,
    pub spec: &'a RunSpec,
    pub state: RunState,
    pub queue_id: Option<u64>,
    pub build: Option<u64>,
}

/// Is `info` the build of the run `claimed` (found from a bus message)?
/// Only a triggered, open run owns a build, and then as [`identify`] says.
/// `Err` says why not (logged at DEBUG: builds that are not poormanci's
/// are common and harmless).
pub fn owns_build(job: Option<&JobConfig>, claimed: Claimed, info: &BuildInfo) -> Result<Identity, String> {
    match claimed.state {
        // A run that was never triggered owns no build, whatever its note says.
        RunState::Gated => return Err(format!("run {} was never triggered", claimed.run)),
        RunState::Done => return Err(format!("run {} has ended", claimed.run)),
        RunState::Triggering | RunState::Queued | RunState::Running => {}
    }
    if let Some(number) = claimed.build.filter(|&b| b != info.number) {
        return Err(format!("run {} is build {number}", claimed.run));
    }
    let sent = trigger_parameters(job, claimed.run, claimed.spec);
    identify(info, claimed.queue_id, &sent).ok_or_else(|| match (claimed.queue_id, info.queue_id) {
        (Some(ours), Some(its)) => format!("it comes from queue item {its}, run {} from {ours}", claimed.run),
        _ => format!("its cause {:?} or parameters are not run {}'s", info.note, claimed.run),
    })
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
pub fn built_what_was_asked(job: &str, sent: &[(String, String)], got: &BuildInfo) -> Result<BuiltAsAsked, String> {
    let sent = sent.iter().filter(|(name, _)| !NOT_PARAMETERS.contains(&name.as_str()));
    let mut missing = Vec::new();
    for (name, value) in sent {
        match got.parameters.iter().find(|p| p.name == *name) {
            None => missing.push(name.as_str()),
            Some(p) if p.value.as_deref() == Some(value.as_str()) => {}
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
pub fn verdict(job: &str, sent: &[(String, String)], build: &BuildInfo) -> Option<(Outcome, Option<BuiltAsAsked>)> {
    let result = build.final_result()?;
    Some(match built_what_was_asked(job, sent, build) {
        Ok(how) => (Outcome::Finished { number: build.number, url: build.url.clone(), result: result.as_str().to_string() }, Some(how)),
        Err(why) => (Outcome::WrongBuild { number: build.number, url: build.url.clone(), why }, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jenkins::{BuildResult, Parameter};

    fn spec() -> RunSpec {
        RunSpec {
            project: "pungi".into(),
            pr: 7,
            job: "pungi-pr".into(),
            commit: Some("a".repeat(40)),
            repo: "https://pagure.io/forks/alice/pungi.git".into(),
            source_branch: "fix".into(),
            target_branch: "main".into(),
            pr_url: "https://pagure.io/pungi/pull-request/7".into(),
        }
    }

    fn job() -> JobConfig {
        crate::testing::config().projects["pungi"][0].clone()
    }

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

    /// What run 3 sends for `spec`, with `commit` (no job parameters).
    fn sent(commit: Option<&str>) -> Vec<(String, String)> {
        let spec = RunSpec { repo: "https://r".into(), target_branch: "master".into(), commit: commit.map(String::from), ..spec() };
        trigger_parameters(None, 3, &spec)
    }

    /// A build carrying exactly what run 3 was triggered with.
    fn copied(queue_id: Option<u64>) -> BuildInfo {
        let sent = trigger_parameters(Some(&job()), 3, &spec());
        let mut b = build_info(12, false, Some("SUCCESS"));
        b.note = Some(sent[0].1.clone());
        b.parameters = sent[1..].iter().map(|(name, value)| Parameter { name: name.clone(), value: Some(value.clone()) }).collect();
        b.queue_id = queue_id;
        b
    }

    #[test]
    fn parameters_sent_include_commit_and_the_jobs_own() {
        let mut job = job();
        job.parameters = vec![("CLEAN".into(), "true".into())];
        let p = trigger_parameters(Some(&job), 3, &RunSpec { commit: Some("abc123".into()), ..spec() });
        let names: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["cause", REPO, BRANCH, BRANCH_TO, COMMIT, "CLEAN"]);
        assert_eq!(p[0].1, cause(&spec().pr_url, 3));
        assert_eq!(p[4].1, "abc123");
        let p = trigger_parameters(None, 3, &RunSpec { commit: None, ..spec() });
        assert!(p.iter().all(|(name, _)| name != COMMIT));
    }

    #[test]
    fn built_what_was_asked_checks_parameters() {
        let sent = sent(Some("abc"));
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
        assert_eq!(built_what_was_asked("pungi-pr", &self::sent(None), &built_with(&old_job)), Ok(BuiltAsAsked::Exactly));
    }

    #[test]
    fn a_result_while_building_is_no_verdict() {
        let sent = sent(None);
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
        let sent = sent(Some("abc"));
        let params = [(REPO, "https://r"), (BRANCH, "fix"), (BRANCH_TO, "master"), (COMMIT, "abc")];
        let mut ours = built_with(&params);
        ours.queue_id = Some(12);
        ours.note = Some(sent[0].1.clone());
        assert_eq!(identify(&ours, Some(12), &sent), Some(Identity::QueueId));
        // Known queue item: nothing else counts, not even the right note.
        assert_eq!(identify(&ours, Some(13), &sent), None);
        assert_eq!(identify(&ours, None, &sent), Some(Identity::CauseAndParameters));
        // The note alone is not enough: anyone with the token can write it.
        let mut forged = ours.clone();
        forged.parameters[1].value = Some("evil".into());
        assert_eq!(identify(&forged, None, &sent), None);
        let builds = [forged, ours];
        assert_eq!(find_build(&builds, None, &sent).map(|b| b.number), Some(7));
        assert_eq!(build_of_queue_item(&builds, 12).map(|b| b.queue_id), Some(Some(12)));
    }

    #[test]
    fn a_build_is_a_runs_by_its_queue_item_or_by_everything_it_was_sent() {
        let spec = spec();
        let claimed = |state, queue_id, build| Claimed { run: 3, spec: &spec, state, queue_id, build };
        let job = job();
        let owns = |c, b: &BuildInfo| owns_build(Some(&job), c, b);
        // The queue item decides when both sides know it.
        assert_eq!(owns(claimed(RunState::Queued, Some(40), None), &copied(Some(40))), Ok(Identity::QueueId));
        assert!(owns(claimed(RunState::Queued, Some(40), None), &copied(Some(41))).is_err(), "a copied cause");
        // Otherwise the note and every parameter.
        assert_eq!(owns(claimed(RunState::Triggering, None, None), &copied(Some(41))), Ok(Identity::CauseAndParameters));
        assert_eq!(owns(claimed(RunState::Queued, Some(40), None), &copied(None)), Ok(Identity::CauseAndParameters));
        let mut other_repo = copied(None);
        other_repo.parameters[0].value = Some("https://evil.example/payload.git".into());
        assert!(owns(claimed(RunState::Triggering, None, None), &other_repo).is_err());
        let mut missing = copied(None);
        missing.parameters.pop();
        assert!(owns(claimed(RunState::Triggering, None, None), &missing).is_err());
        let mut other_note = copied(None);
        other_note.note = Some(cause(&spec.pr_url, 4));
        assert!(owns(claimed(RunState::Triggering, None, None), &other_note).is_err());
        // Never triggered, already ended, or known to be another build.
        assert!(owns(claimed(RunState::Gated, None, None), &copied(None)).is_err());
        assert!(owns(claimed(RunState::Done, None, None), &copied(None)).is_err());
        assert!(owns(claimed(RunState::Running, None, Some(11)), &copied(None)).is_err());
        assert_eq!(owns(claimed(RunState::Running, None, Some(12)), &copied(None)), Ok(Identity::CauseAndParameters));
    }
}
