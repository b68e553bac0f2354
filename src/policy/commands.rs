//! The comment commands (`/ok-to-test`, `/retest`, `/test <job>`): how
//! they are read and which jobs they build.

use super::trigger::{builds_into, jobs_for};
use crate::config::{Approve, Commands, Config};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Approve the commit the approver saw (and, with `approve:
    /// "pull-request"`, the PR's later commits).
    OkToTest,
    /// Build every job again at the current commit.
    Retest,
    /// Build one job again.
    Test(String),
}

/// Commands read from one comment at most: a comment of 6 000 `/test x`
/// lines must not become 6 000 decisions and log lines.
pub const MAX_COMMANDS: usize = 5;

/// The commands in a comment, and how many more were left unread (past
/// `MAX_COMMANDS`). A command is alone on its own line, so that quoting or
/// mentioning one in a sentence (as poormanci's own comments do) is not
/// one, and outside fenced code blocks (``` or ~~~), where people paste
/// logs and examples.
pub fn parse_commands(phrases: &Commands, text: &str) -> (Vec<Command>, usize) {
    let mut out = Vec::new();
    let mut ignored = 0;
    // The open fence: its character and length (CommonMark: closed by a
    // line of at least as many of the same character, and nothing else).
    let mut fence: Option<(char, usize)> = None;
    for line in text.lines().map(str::trim) {
        let run = |c: char| line.chars().take_while(|&x| x == c).count();
        match fence {
            Some((c, n)) => {
                if run(c) >= n && line.chars().all(|x| x == c) {
                    fence = None;
                }
                continue;
            }
            None => {
                if let Some(c) = ['`', '~'].into_iter().find(|&c| run(c) >= 3) {
                    fence = Some((c, run(c)));
                    continue;
                }
            }
        }
        let command = if line == phrases.ok_to_test {
            Command::OkToTest
        } else if line == phrases.retest {
            Command::Retest
        } else if let Some(job) = line.strip_prefix(phrases.test.as_str()).and_then(|r| r.strip_prefix(' ')) {
            Command::Test(job.trim().to_string())
        } else {
            continue;
        };
        if out.contains(&command) {
            continue;
        }
        if out.len() < MAX_COMMANDS {
            out.push(command);
        } else {
            ignored += 1;
        }
    }
    (out, ignored)
}

/// Does an `/ok-to-test` written when the PR's head was `approved` let a
/// run of `commit` go? With `approve: "commit"` only that very commit: an
/// approver vouches for the code they saw, not for a push made since.
pub fn approves(cfg: &Config, approved: Option<&str>, commit: Option<&str>) -> bool {
    match cfg.approve {
        Approve::PullRequest => true,
        Approve::Commit => approved.is_some() && approved == commit,
    }
}

/// Does an earlier `/ok-to-test` let a later push of an untrusted author build?
pub fn approval_carries_over(cfg: &Config) -> bool {
    cfg.approve == Approve::PullRequest
}

/// What a trusted person's command does on a PR into `target_branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Approve the PR and release its gated runs (see `approves`).
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
    fn fenced_code_and_floods_are_not_commands() {
        let phrases = crate::testing::config().commands;
        // A fence closes only with at least as many of its own character.
        let text = "see:\n````\n/ok-to-test\n```\n~~~\n/retest\n````\n~~~ log\n/test a\n```\n~~~\n/test b";
        assert_eq!(parse_commands(&phrases, text), (vec![Command::Test("b".into())], 0));
        // An unclosed fence runs to the end of the comment.
        assert_eq!(parse_commands(&phrases, "```\n/retest"), (vec![], 0));
        let flood: String = (0..6000).map(|i| format!("/test job{i}\n/retest\n")).collect();
        let (commands, ignored) = parse_commands(&phrases, &flood);
        assert_eq!(commands.len(), MAX_COMMANDS);
        assert_eq!(ignored, 6000 - (MAX_COMMANDS - 1));
    }

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

#[cfg(test)]
mod approval_tests {
    use super::*;
    use crate::testing::config;

    #[test]
    fn an_approval_is_for_the_commit_the_approver_saw() {
        let mut cfg = config();
        assert_eq!(cfg.approve, Approve::Commit, "the default");
        assert!(approves(&cfg, Some("a"), Some("a")));
        assert!(!approves(&cfg, Some("a"), Some("b")), "pushed after the approver looked");
        assert!(!approves(&cfg, None, Some("a")), "no way to tell what was seen");
        assert!(!approval_carries_over(&cfg));
        cfg.approve = Approve::PullRequest;
        assert!(approves(&cfg, Some("a"), Some("b")));
        assert!(approval_carries_over(&cfg));
    }
}
