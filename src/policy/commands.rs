//! The comment commands (`/ok-to-test`, `/retest`, `/test <job>`): how
//! they are read and which jobs they build.

use super::trigger::{builds_into, jobs_for};
use crate::config::{Commands, Config};

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

/// What a trusted person's command does on a PR into `target_branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Approve the PR and release its gated runs.
    Approve,
    /// Build these jobs again at the PR's current commit.
    Build(Vec<String>),
    /// Nothing; the reason is worth telling (logged at INFO).
    Nothing(String),
}

pub fn effect(cfg: &Config, project: &str, target_branch: &str, command: &Command) -> Effect {
    match command {
        Command::OkToTest => Effect::Approve,
        Command::Retest => Effect::Build(jobs_for(cfg, project, target_branch).into_iter().map(|j| j.job.clone()).collect()),
        Command::Test(name) => {
            let named = cfg.projects.get(project).into_iter().flatten().find(|j| &j.job == name || &j.display_name == name);
            match named {
                None => Effect::Nothing(format!("{name:?} is not a job of {project}")),
                Some(job) if !builds_into(job, target_branch) => Effect::Nothing(format!(
                    "job {} does not build pull requests into {target_branch} (its branches: {})",
                    job.job,
                    job.branches.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ")
                )),
                Some(job) => Effect::Build(vec![job.job.clone()]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_a_command_builds_follows_the_branches() {
        let cfg = Config::from_value(&json!({
            "poormanci.pagure": {"url": "https://pagure.io", "token": "t"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org"},
            "poormanci.projects": {"pungi": [
                {"job": "pungi-pr", "token": "x", "branches": ["main"]},
                {"job": "folder/docs", "token": "y"},
            ]},
            "poormanci.state_dir": "/nonexistent",
        }))
        .unwrap();
        let effect = |branch: &str, c: Command| effect(&cfg, "pungi", branch, &c);
        assert_eq!(effect("main", Command::Retest), Effect::Build(vec!["pungi-pr".into(), "folder/docs".into()]));
        assert_eq!(effect("f41", Command::Retest), Effect::Build(vec!["folder/docs".into()]));
        assert_eq!(effect("f41", Command::Test("folder".into())), Effect::Build(vec!["folder/docs".into()]), "by display name");
        assert_eq!(
            effect("f41", Command::Test("pungi-pr".into())),
            Effect::Nothing("job pungi-pr does not build pull requests into f41 (its branches: main)".into())
        );
        assert_eq!(effect("f41", Command::Test("nope".into())), Effect::Nothing("\"nope\" is not a job of pungi".into()));
        assert_eq!(effect("f41", Command::OkToTest), Effect::Approve);
    }
}
