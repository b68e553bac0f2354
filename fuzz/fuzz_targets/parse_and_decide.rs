//! A bus message, as the hub hands it over, through everything pure that
//! reads it: `event::parse`, `policy::decide` (twice, recording what it
//! triggered in between, as the engine does) and the report texts.
//!
//! Input: the topic on the first line, the fedmsg envelope as JSON after it.
//! Besides "no panic", the invariants of `decide` are asserted, so a wrong
//! decision is a crash too.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use poormanci::config::Config;
use poormanci::event::{self, Event, Message, PrStatus, Source};
use poormanci::policy::{self, Decision, Head, History, Outcome};

#[path = "common.rs"]
mod common;

#[derive(Default)]
struct Built(HashSet<(String, u64, String, String)>);

impl History for Built {
    fn built(&self, project: &str, pr: u64, job: &str, commit: &str) -> bool {
        self.0.contains(&(project.into(), pr, job.into(), commit.into()))
    }
}

fuzz_target!(|data: &[u8]| {
    let (topic, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(topic) = std::str::from_utf8(topic) else { return };
    strings(topic);
    // serde_json's recursion limit (128) bounds the depth.
    let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let cfg = common::config();
    if let Ok(msg) = event::parse(cfg, topic, &&envelope) {
        decisions(cfg, &msg);
    }
    // A project as `GET /api/0/<project>` reports it, and who is trusted.
    let acl = policy::acl_of_project(&envelope);
    let trust = cfg.trust(topic);
    let groups = policy::groups_to_ask(trust, &acl);
    for user in acl.users.iter().chain(&groups) {
        if policy::trusted_by_config(trust, user) {
            assert!(policy::trusted_by_pagure(trust, user, &acl, &[]));
        }
    }
});

/// The pure string rules, on any text.
fn strings(s: &str) {
    let _ = policy::is_update_notice(s);
    let _ = policy::valid_branch(s);
    let _ = policy::run_in_note(s);
    let _ = policy::short(Some(s));
    assert!(policy::flag_uid(s).len() <= 32);
}

fn decisions(cfg: &Config, msg: &Message) {
    let mut built = Built::default();
    let first = policy::decide(cfg, msg, &built);
    match (&msg.event, &first) {
        (Event::PullRequest(e), _) => {
            let pr = &e.pr;
            strings(&pr.branch);
            strings(&pr.branch_from);
            if let Some(t) = pr.last_comment.as_ref().and_then(|c| c.text.as_deref()) {
                strings(t);
            }
            if let Some(c) = &pr.last_comment {
                let _ = policy::parse_commands(&cfg.commands, c.text.as_deref().unwrap_or(""));
            }
            if let Decision::Commands { commands, spec, .. } = &first {
                assert!(!commands.is_empty());
                assert_eq!(e.action, "comment.added");
                assert!(pr.last_comment.as_ref().is_some_and(|c| !c.notification), "commands in a notification");
                assert_eq!(pr.status, PrStatus::Open, "commands for a PR that is not open");
                assert!(!pr.target_is_fork && cfg.projects.contains_key(&pr.project));
                check_spec(cfg, spec);
            }
            if let Decision::Trigger { runs, author } = &first {
                assert!(!runs.is_empty());
                assert_eq!(author, &pr.author);
                assert_eq!(pr.status, PrStatus::Open, "triggered for a PR that is not open");
                assert!(!pr.target_is_fork, "triggered for a fork's PR");
                assert!(matches!(e.action.as_str(), "new" | "updated" | "rebased" | "comment.added"), "{}", e.action);
                if e.action == "comment.added" {
                    assert!(pr.last_comment.as_ref().is_some_and(|c| c.notification), "a person's comment triggered");
                }
                for run in runs {
                    check_run(cfg, run);
                    assert_eq!((run.project.as_str(), run.pr, &run.commit), (pr.project.as_str(), pr.id, &pr.commit));
                    if let Source::Remote { url } = &pr.source {
                        assert_eq!(&run.repo, url);
                    }
                    if let Some(c) = &run.commit {
                        built.0.insert((run.project.clone(), run.pr, run.job.clone(), c.clone()));
                    }
                    reports(cfg, run, pr.last_comment.as_ref().and_then(|c| c.text.as_deref()).unwrap_or("SUCCESS"));
                }
                // What the engine recorded: the same message again (the
                // companion comment of a push) builds nothing twice.
                let again = policy::decide(cfg, msg, &built);
                if pr.commit.is_some() {
                    assert!(!matches!(again, Decision::Trigger { .. }), "built twice: {again:?}");
                } else {
                    assert_eq!(again, first, "no commit, no dedupe by commit");
                }
            }
        }
        (Event::BuildFinished { display_name, number, .. }, Decision::BuildFinished { jobs, number: n }) => {
            assert_eq!(number, n);
            for (project, job) in jobs {
                assert_eq!(&cfg.job(project, job).expect("a configured job").display_name, display_name);
            }
        }
        (_, Decision::Trigger { .. } | Decision::Commands { .. }) => panic!("{first:?} from {:?}", msg.event),
        _ => {}
    }
}

fn check_run(cfg: &Config, run: &policy::RunSpec) {
    assert!(cfg.job(&run.project, &run.job).is_some(), "unconfigured job {run:?}");
    check_spec(cfg, run);
}

/// A run's parameters as they go to Jenkins (and from there to git).
fn check_spec(cfg: &Config, run: &policy::RunSpec) {
    assert!(policy::valid_branch(&run.branch) && policy::valid_branch(&run.branch_to), "{run:?}");
    assert!(!run.repo.starts_with('-'), "{run:?}");
    let base = cfg.pagure.peer.url.as_str().trim_end_matches('/');
    assert!(
        run.repo.starts_with(&format!("{base}/"))
            || ["https://", "http://", "git://"].iter().any(|s| run.repo.starts_with(s)),
        "{run:?}"
    );
    assert!(run.pr_url.starts_with(&format!("{base}/")), "{run:?}");
}

/// The texts the engine builds for a run of this message.
fn reports(cfg: &Config, run: &policy::RunSpec, result: &str) {
    let n = i64::try_from(run.pr).unwrap_or(i64::MAX);
    assert_eq!(policy::run_in_note(&policy::cause(&run.pr_url, n)), Some(n));
    let job_url = format!("https://jenkins.example.org/job/{}/", run.job);
    let commit = run.commit.as_deref();
    let _ = policy::pending_running(run.pr, &job_url);
    let outcomes = [
        Outcome::Finished { number: run.pr, url: job_url.clone(), result: result.to_string() },
        Outcome::QueueCancelled,
        Outcome::NotStarted { after_secs: run.pr },
        Outcome::NotFinished { number: run.pr, url: job_url.clone(), after_secs: run.pr % 100_000 },
        Outcome::TriggerFailed { why: result.to_string() },
        Outcome::Lost { why: result.to_string() },
    ];
    let heads = [
        Head::Same,
        Head::MovedOn { head: run.branch.clone(), rebuilding: true },
        Head::MovedOn { head: commit.unwrap_or("").to_string(), rebuilding: false },
    ];
    for o in &outcomes {
        for h in &heads {
            let r = policy::final_report(cfg, &run.job, &job_url, commit, o, h);
            assert_eq!(r.flag.is_some(), *h == Head::Same);
        }
    }
}
