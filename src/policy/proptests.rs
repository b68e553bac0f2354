//! Invariants of `decide` over generated Pagure pull-request messages, shaped
//! like the 2016 `new` fixture and varied in every field `decide` reads.

use super::*;
use crate::event::Message;
use crate::event::parse;
use crate::testing::{config, fixture};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::OnceLock;

const ACTIONS: &[&str] = &[
    "new", "updated", "rebased", "reopened", "comment.added", "comment.edited", "closed",
    "flag.added", "flag.updated", "tag.added", "assigned.added", "initial_comment.edited",
];

/// A generated message, kept beside its JSON so that properties are
/// checked against what was generated, not against what `parse` read.
#[derive(Debug, Clone)]
struct Gen {
    action: &'static str,
    status: Value,
    /// (name, namespace)
    project: (&'static str, Option<&'static str>),
    target_is_fork: bool,
    id: u64,
    commit: Option<String>,
    /// Pagure's `branch` and `branch_from`.
    target_branch: String,
    source_branch: String,
    source: Src,
    comments: Vec<(String, bool, String)>,
    agent: Option<&'static str>,
    author: &'static str,
}

#[derive(Debug, Clone)]
enum Src {
    Same,
    Fork(String),
    Remote(String),
}

impl Gen {
    fn path(&self) -> String {
        match self.project.1 {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.project.0),
            _ => self.project.0.to_string(),
        }
    }

    fn open(&self) -> bool {
        self.status == json!("Open") || self.status == json!(true)
    }

    fn topic(&self) -> String {
        format!("{}.pull-request.{}", config().pagure.peer.topic, self.action)
    }

    fn envelope(&self) -> Value {
        static TEMPLATE: OnceLock<Value> = OnceLock::new();
        let mut v = TEMPLATE.get_or_init(|| fixture("prod2016.pagure.pull-request.new.pungi-235")).clone();
        v["topic"] = self.topic().into();
        v["msg"]["agent"] = self.agent.map_or(Value::Null, Value::from);
        let pr = &mut v["msg"]["pullrequest"];
        pr["status"] = self.status.clone();
        pr["id"] = self.id.into();
        pr["commit_stop"] = self.commit.clone().map_or(Value::Null, Value::from);
        pr["branch"] = self.target_branch.clone().into();
        pr["branch_from"] = self.source_branch.clone().into();
        pr["user"]["name"] = self.author.into();
        pr["project"]["name"] = self.project.0.into();
        pr["project"]["namespace"] = self.project.1.map_or(Value::Null, Value::from);
        if self.target_is_fork {
            pr["project"]["parent"] = json!({"name": self.project.0, "parent": null});
        }
        let parent = pr["repo_from"]["parent"].clone();
        match &self.source {
            Src::Same => {
                pr["repo_from"] = json!({"name": self.project.0, "parent": null, "user": {"name": "ausil"}});
            }
            Src::Fork(user) => {
                pr["repo_from"] = json!({"name": self.project.0, "parent": parent, "user": {"name": user}});
            }
            Src::Remote(url) => {
                pr["repo_from"] = Value::Null;
                pr["remote_git"] = url.clone().into();
            }
        }
        pr["comments"] = self
            .comments
            .iter()
            .enumerate()
            .map(|(i, (text, notification, user))| {
                json!({"id": i, "comment": text, "notification": notification, "user": {"name": user}, "date_created": "1458306353"})
            })
            .collect();
        v
    }

    fn message(&self) -> Message {
        parse(&config(), &self.topic(), &&self.envelope()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Branch names: git's usual ones (mostly, so that builds happen) and
/// what a hostile PR could send.
fn branch() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => prop::sample::select(vec![
            "master", "main", "f39", "feature/x", "fix-thing", "release/1.2", "caf\u{e9}", "a;b",
        ])
        .prop_map(String::from),
        2 => prop::sample::select(vec![
            "-x", "--upload-pack=evil", "a..b", "foo bar", "a\nb", "a~1", "", "x.lock", "@{-1}", "@", "a^b",
            "a:b", "a?b", "a*b", "a[b", "/a", "a/", "a//b", ".a", "a/.b", "a\\b", "a\u{7f}", "$(id)", "a\u{0}b",
        ])
        .prop_map(String::from),
        1 => "[a-z0-9._/@{}~^:\\- -]{0,12}",
        1 => "\\PC{0,8}",
    ]
}

fn commit() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[0-9a-f]{40}".prop_map(Some),
        prop::sample::select(vec!["aaaaaaa\u{e9}", "-x", "", "$(id)", "HEAD"]).prop_map(|s| Some(s.to_string())),
    ]
}

fn source() -> impl Strategy<Value = Src> {
    prop_oneof![
        4 => Just(Src::Same),
        4 => Just(Src::Fork("lsedlar".into())),
        2 => Just(Src::Remote("https://github.com/a/b.git".into())),
        2 => prop::sample::select(vec!["lsedlar", "a-b", "x.y", "-evil", "..", ".x", "a/b", "a b", "", "\u{fc}ser", "u;id"])
            .prop_map(|u| Src::Fork(u.into())),
        1 => "[a-z.-]{0,6}".prop_map(Src::Fork),
        3 => prop::sample::select(vec![
            "https://github.com/a/b.git", "http://git.example.org/r", "git://host/r.git", "ext::sh -c evil",
            "--upload-pack=x", "/etc/passwd", "file:///etc", "https://a b/", "https:/h/x.git", "HTTPS://GITHUB.COM/a",
            "ssh://host/x", "git@github.com:a/b.git", "https://host/x\n", "-https://x", "https://host:443/x", "",
        ])
        .prop_map(|u| Src::Remote(u.into())),
        3 => "(https?|git|ssh|ext|file):/?/?[a-zA-Z@:./ -]{0,12}".prop_map(Src::Remote),
    ]
}

fn comment_text() -> impl Strategy<Value = String> {
    let text = |texts: &[&'static str]| prop::sample::select(texts.to_vec()).prop_map(String::from);
    prop_oneof![
        2 => text(&[
            "Pull-Request has been updated", "Pull-Request has been rebased", "rebased",
            "rebased onto 9067a82cc7ef52413758dbc44cad7a8207e4aee9", "**1 new commit added**\n\n * ``x``\n",
        ]),
        1 => text(&[
            "Pull-Request has been closed by alice", "Pull-Request has been reopened by alice",
            "**Metadata Update from @alice**:\n- Pull-request tagged with: foo", "please /retest", "LGTM",
        ]),
        2 => text(&["/retest", "/ok-to-test", "/test pungi-pr", "/test nope", "LGTM\n/retest"]),
        1 => "\\PC{0,24}",
    ]
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![6 => prop::sample::select(vec!["alice", "pagure", "lsedlar"]), 1 => Just("cibot")].prop_map(String::from)
}

fn gen() -> impl Strategy<Value = Gen> {
    let status = prop_oneof![
        3 => Just(json!("Open")),
        1 => prop::sample::select(vec![json!("Merged"), json!("Closed"), json!(true), json!(false)]),
    ];
    let project = prop_oneof![
        6 => prop::sample::select(vec![("pungi", None), ("python-foo", Some("rpms")), ("pungi", Some(""))]),
        1 => prop::sample::select(vec![("pungi-fedora", None), ("python-foo", None), ("pungi", Some("forks"))]),
    ];
    let agent = prop_oneof![6 => Just(None), 3 => prop::sample::select(vec![Some("pagure"), Some("alice")]), 1 => Just(Some("cibot"))];
    // Mostly the actions that build, so that every rule is reached.
    let action = prop_oneof![
        2 => prop::sample::select(&ACTIONS[..3]),
        2 => Just("comment.added"),
        1 => prop::sample::select(ACTIONS),
    ];
    let author = prop::sample::select(vec!["lsedlar", "alice", "cibot"]);
    (
        (action, status, project, prop::bool::weighted(0.1), 1..1000u64, commit()),
        (branch(), branch(), source(), vec((comment_text(), any::<bool>(), user()), 0..6), agent, author),
    )
        .prop_map(|((action, status, project, target_is_fork, id, commit), (target_branch, source_branch, source, comments, agent, author))| Gen {
            action,
            status,
            project,
            target_is_fork,
            id,
            commit,
            target_branch,
            source_branch,
            source,
            comments,
            agent,
            author,
        })
}

#[derive(Default)]
struct Built(HashSet<(String, u64, String, String)>);
impl History for Built {
    fn built(&self, project: &str, pr: u64, job: &str, commit: &str) -> bool {
        self.0.contains(&(project.into(), pr, job.into(), commit.into()))
    }
}

/// What `decide` may hand to Jenkins, and from there to git.
fn check_spec(g: &Gen, spec: &RunSpec) -> Result<(), TestCaseError> {
    prop_assert!(valid_branch(&spec.source_branch) && valid_branch(&spec.target_branch), "{spec:?}");
    prop_assert_eq!((&spec.source_branch, &spec.target_branch), (&g.source_branch, &g.target_branch));
    prop_assert!(!spec.repo.starts_with('-'), "{:?}", spec);
    let from_pagure = spec.repo.starts_with("https://pagure.io/");
    let remote = url::Url::parse(&spec.repo).is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "git") && u.as_str() == spec.repo);
    prop_assert!(from_pagure || remote, "{:?}", spec);
    match &g.source {
        Src::Same => prop_assert_eq!(&spec.repo, &format!("https://pagure.io/{}.git", g.path())),
        Src::Fork(user) => prop_assert_eq!(&spec.repo, &format!("https://pagure.io/forks/{user}/{}.git", g.path())),
        Src::Remote(url) => prop_assert!(&spec.repo == url && remote, "{:?}", spec),
    }
    prop_assert_eq!((&spec.project, spec.pr, &spec.commit), (&g.path(), g.id, &g.commit));
    Ok(())
}

proptest! {
    /// (a) Never a build for a PR that is not open, for an unconfigured
    /// project, or for a PR whose target is a fork; (d) never a trigger
    /// from a person's comment, nor from poormanci's own echo.
    #[test]
    fn no_build_where_none_is_due(g in gen()) {
        let cfg = config();
        let d = decide(&cfg, &g.message(), &Built::default());
        let builds = matches!(d, Decision::Trigger { .. } | Decision::Commands { .. });
        if !g.open() || !cfg.projects.contains_key(&g.path()) || g.target_is_fork || g.agent == Some("cibot") {
            prop_assert!(!builds, "{:?} from {:?}", d, g);
        }
        if g.action == "comment.added" && g.comments.last().is_some_and(|c| !c.1) {
            prop_assert!(!matches!(d, Decision::Trigger { .. }), "a person's comment triggered: {:?}", g);
        }
        if matches!(d, Decision::Commands { .. }) {
            prop_assert!(g.action == "comment.added" && g.comments.last().is_some_and(|c| !c.1), "{:?}", g);
        }
    }

    /// (b) Every triggered run (and every command's spec) carries git-safe
    /// branches and a repo URL from Pagure or a plain http(s)/git URL.
    #[test]
    fn runs_are_safe_to_hand_to_git(g in gen()) {
        let cfg = config();
        match decide(&cfg, &g.message(), &Built::default()) {
            Decision::Trigger { runs, author, .. } => {
                prop_assert_eq!(author.as_str(), g.author);
                let jobs: Vec<&str> = runs.iter().map(|r| r.job.as_str()).collect();
                let configured: Vec<&str> = cfg.projects[&g.path()].iter().map(|j| j.job.as_str()).collect();
                prop_assert_eq!(jobs, configured);
                for run in &runs {
                    check_spec(&g, run)?;
                }
            }
            Decision::Commands { spec, .. } => check_spec(&g, &spec)?,
            _ => {}
        }
    }

    /// (c) Messages in any order, each triggered run recorded as the
    /// engine records it: no (project, PR, job, commit) is built twice.
    #[test]
    fn one_build_per_commit_and_job(
        gens in vec(gen(), 1..16),
        picks in vec((1..4u64, 0..4usize, any::<bool>()), 16),
    ) {
        let cfg = config();
        let commits = [None, Some("a".repeat(40)), Some("b".repeat(40)), Some("c".repeat(40))];
        let mut built = Built::default();
        for (mut g, (id, c, open)) in gens.into_iter().zip(picks) {
            // Few PRs and commits, mostly open, so that repeats happen.
            g.id = id;
            g.commit = commits[c].clone();
            if open {
                g.status = json!("Open");
                g.target_is_fork = false;
                g.agent = None;
            }
            if let Decision::Trigger { runs, .. } = decide(&cfg, &g.message(), &built) {
                for run in runs {
                    if let Some(commit) = run.commit {
                        let key = (run.project, run.pr, run.job, commit);
                        prop_assert!(!built.0.contains(&key), "built twice: {:?}", key);
                        built.0.insert(key);
                    }
                }
            }
        }
    }

    #[test]
    fn short_cuts_on_a_char_boundary(s in "\\PC{0,16}") {
        let cut = short(Some(&s));
        prop_assert!(s.starts_with(cut) && cut.chars().count() <= 8);
    }
}

/// The generator reaches every kind of decision, so that the properties
/// above are not vacuous.
#[test]
fn generator_reaches_every_rule() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let cfg = config();
    let mut runner = TestRunner::deterministic();
    let mut kinds = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let g = gen().new_tree(&mut runner).unwrap().current();
        let kind = match decide(&cfg, &g.message(), &Built::default()) {
            Decision::Ignore(_) => "ignore",
            Decision::Refuse(_) => "refuse",
            Decision::Trigger { .. } if g.action == "comment.added" => "trigger by notice",
            Decision::Trigger { .. } => "trigger",
            Decision::Commands { .. } => "commands",
            Decision::BuildFinished { .. } => "build finished",
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    for kind in ["ignore", "refuse", "trigger", "trigger by notice", "commands"] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= 5, "{kind}: {kinds:?}");
    }
}
