//! Which Jenkins build is a run's. Anyone holding a job's trigger token can
//! start a build and copy poormanci's cause note into it; its result must
//! not land on a pull request. So a build is a run's only when it came from
//! the queue item poormanci was given, or (when that is not known) when its
//! note and every parameter poormanci sent match the run.

use super::report::cause;
use super::trigger::RunSpec;
use crate::config::JobConfig;
use crate::jenkins::BuildInfo;
use crate::work::RunState;

/// What poormanci sends with a trigger besides the token: the cause note
/// (Jenkins keeps it as the remote cause, not as a parameter), then the
/// build parameters: `REPO`, `BRANCH`, `BRANCH_TO` and the job's own.
pub fn trigger_parameters(job: &JobConfig, run: i64, spec: &RunSpec) -> Vec<(String, String)> {
    let mut params = vec![
        ("cause".to_string(), cause(&spec.pr_url, run)),
        ("REPO".into(), spec.repo.clone()),
        ("BRANCH".into(), spec.source_branch.clone()),
        ("BRANCH_TO".into(), spec.target_branch.clone()),
    ];
    params.extend(job.parameters.iter().cloned());
    params
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

/// Is `info` the build of the run `claimed`? `Err` says why not (logged at
/// DEBUG: builds that are not poormanci's are common and harmless).
pub fn owns_build(job: &JobConfig, claimed: Claimed, info: &BuildInfo) -> Result<(), String> {
    match claimed.state {
        // A run that was never triggered owns no build, whatever its note says.
        RunState::Gated => return Err(format!("run {} was never triggered", claimed.run)),
        RunState::Done => return Err(format!("run {} has ended", claimed.run)),
        RunState::Triggering | RunState::Queued | RunState::Running => {}
    }
    if let Some(number) = claimed.build.filter(|&b| b != info.number) {
        return Err(format!("run {} is build #{number}", claimed.run));
    }
    if let (Some(ours), Some(its)) = (claimed.queue_id, info.queue_id) {
        // The queue item Jenkins gave poormanci settles it.
        return if ours == its { Ok(()) } else { Err(format!("it comes from queue item {its}, run {} from {ours}", claimed.run)) };
    }
    let sent = trigger_parameters(job, claimed.run, claimed.spec);
    if info.note.as_deref() != Some(sent[0].1.as_str()) {
        return Err(format!("its cause {:?} is not run {}'s", info.note, claimed.run));
    }
    for (name, value) in &sent[1..] {
        let its = info.parameters.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if its != Some(value) {
            return Err(format!("its {name} {its:?} is not run {}'s {value:?}", claimed.run));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jenkins::BuildResult;

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

    /// A build carrying exactly what run 3 was triggered with.
    fn copied(queue_id: Option<u64>) -> BuildInfo {
        let sent = trigger_parameters(&job(), 3, &spec());
        BuildInfo {
            number: 12,
            url: "u".into(),
            result: Some(BuildResult::Success),
            building: false,
            note: Some(sent[0].1.clone()),
            parameters: sent[1..].to_vec(),
            queue_id,
        }
    }

    #[test]
    fn a_build_is_a_runs_by_its_queue_item_or_by_everything_it_was_sent() {
        let spec = spec();
        let claimed = |state, queue_id, build| Claimed { run: 3, spec: &spec, state, queue_id, build };
        let job = job();
        // The queue item decides when both sides know it.
        assert_eq!(owns_build(&job, claimed(RunState::Queued, Some(40), None), &copied(Some(40))), Ok(()));
        assert!(owns_build(&job, claimed(RunState::Queued, Some(40), None), &copied(Some(41))).is_err(), "a copied cause");
        // Otherwise the note and every parameter.
        assert_eq!(owns_build(&job, claimed(RunState::Triggering, None, None), &copied(Some(41))), Ok(()));
        assert_eq!(owns_build(&job, claimed(RunState::Queued, Some(40), None), &copied(None)), Ok(()));
        let mut other_repo = copied(None);
        other_repo.parameters[0].1 = "https://evil.example/payload.git".into();
        assert!(owns_build(&job, claimed(RunState::Triggering, None, None), &other_repo).is_err());
        let mut missing = copied(None);
        missing.parameters.pop();
        assert!(owns_build(&job, claimed(RunState::Triggering, None, None), &missing).is_err());
        let mut other_note = copied(None);
        other_note.note = Some(cause(&spec.pr_url, 4));
        assert!(owns_build(&job, claimed(RunState::Triggering, None, None), &other_note).is_err());
        // Never triggered, already ended, or known to be another build.
        assert!(owns_build(&job, claimed(RunState::Gated, None, None), &copied(None)).is_err());
        assert!(owns_build(&job, claimed(RunState::Done, None, None), &copied(None)).is_err());
        assert!(owns_build(&job, claimed(RunState::Running, None, Some(11)), &copied(None)).is_err());
        assert_eq!(owns_build(&job, claimed(RunState::Running, None, Some(12)), &copied(None)), Ok(()));
    }
}
