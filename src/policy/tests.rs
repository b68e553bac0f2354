//! Tests of `decide`: which messages start which runs, on real fixtures.

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
    assert_eq!((runs[0].source_branch.as_str(), runs[0].target_branch.as_str()), ("lorax-dir", "master"));
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
    assert_eq!(parse_commands(&cfg.commands, text).0, [Command::OkToTest, Command::Retest, Command::Test("pungi-docs".into())]);
    assert!(parse_commands(&cfg.commands, &approval_notice(&cfg)).0.is_empty());
    let d = decide_fixture("prod2016.pagure.pull-request.comment.added.human.pagure-843", |v| {
        v["msg"]["pullrequest"]["project"]["name"] = "pungi".into();
        let c = v["msg"]["pullrequest"]["comments"].as_array_mut().unwrap().last_mut().unwrap();
        c["comment"] = "/retest".into();
    });
    assert!(matches!(d, Decision::Commands { ref commands, .. } if commands == &[Command::Retest]), "{d:?}");
}
