//! A typed view of the bus messages poormanci reacts to.
//!
//! Parsing reads only the fields it needs, through the small [`Node`] trait,
//! so the same code reads a Python dict in place (no copy of a 5 MB comment
//! list, no recursion into hostile nesting) and a `serde_json::Value` in tests
//! and fuzzing.

mod json;
mod python;

use crate::config::Config;

/// Longest comment text read; a longer comment is neither a command nor a
/// Pagure notification (those are a few lines).
pub const MAX_COMMENT: usize = 64 * 1024;
/// Longest value read for names, branches, URLs and the like.
pub const MAX_FIELD: usize = 4096;

/// Read access to a JSON-shaped value.
pub trait Node: Sized {
    /// The member `key` of a dict; None when this is not a dict, the key is
    /// missing or its value is null.
    fn get(&self, key: &str) -> Option<Self>;
    /// A string of at most `max` bytes; None for other types or longer strings.
    fn text(&self, max: usize) -> Option<String>;
    fn uint(&self) -> Option<u64>;
    fn boolean(&self) -> Option<bool>;
    /// The last element of a list.
    fn last(&self) -> Option<Self>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub msg_id: Option<String>,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    PullRequest(PrEvent),
    /// Jenkins' fedmsg notifier: a build of a job ended (`status` is the last
    /// topic word: passed, failed, unstable, aborted, notbuilt, unknown).
    BuildFinished { display_name: String, number: u64, status: String },
    /// Not a message poormanci acts on; the reason is logged at DEBUG.
    NotOurs(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrEvent {
    /// The topic after `pull-request.`: new, updated, rebased, comment.added, closed, …
    pub action: String,
    pub agent: Option<String>,
    pub pr: PullRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrStatus {
    Open,
    Merged,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A branch of the project itself.
    SameProject,
    /// A fork `forks/<user>/[ns/]name`.
    Fork { user: String },
    /// A remote pull request from any git URL.
    Remote { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// None when the text is longer than [`MAX_COMMENT`].
    pub text: Option<String>,
    pub notification: bool,
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The Pagure path `[namespace/]name` of the target project.
    pub project: String,
    /// The target project is itself a fork (`forks/<user>/...`).
    pub target_is_fork: bool,
    pub id: u64,
    pub status: PrStatus,
    /// The branch the PR merges into (Pagure's `branch`).
    pub target_branch: String,
    /// The PR's own branch (Pagure's `branch_from`).
    pub source_branch: String,
    /// The PR's tip; null in messages before 2016.
    pub commit: Option<String>,
    pub author: String,
    pub source: Source,
    pub last_comment: Option<Comment>,
    /// For the status page only; None when missing or too long.
    pub title: Option<String>,
}

/// Why a message could not be read: names the field, e.g. `pullrequest.id: expected a number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn need<T>(v: Option<T>, field: &str, expected: &str) -> Result<T, Malformed> {
    v.ok_or_else(|| Malformed(format!("{field}: expected {expected}")))
}

/// Read one bus message. `envelope` is fedmsg's `{"msg", "msg_id", ...}`.
pub fn parse<N: Node>(cfg: &Config, topic: &str, envelope: &N) -> Result<Message, Malformed> {
    let msg_id = envelope.get("msg_id").and_then(|v| v.text(MAX_FIELD));
    let event = parse_event(cfg, topic, envelope)?;
    Ok(Message { topic: topic.to_string(), msg_id, event })
}

fn parse_event<N: Node>(cfg: &Config, topic: &str, envelope: &N) -> Result<Event, Malformed> {
    let pagure = format!("{}.pull-request.", cfg.pagure.peer.topic);
    let jenkins = format!("{}.build.", cfg.jenkins.peer.topic);
    if let Some(action) = topic.strip_prefix(&pagure) {
        let body = need(envelope.get("msg"), "msg", "a dict")?;
        // tag.* messages spell it "pull_request".
        let pr = need(body.get("pullrequest").or_else(|| body.get("pull_request")), "msg.pullrequest", "a dict")?;
        return Ok(Event::PullRequest(PrEvent {
            action: action.to_string(),
            agent: body.get("agent").and_then(|a| a.text(MAX_FIELD)),
            pr: parse_pr(&pr)?,
        }));
    }
    if let Some(status) = topic.strip_prefix(&jenkins) {
        if status == "start" {
            return Ok(Event::NotOurs("a build start is not a result".into()));
        }
        let body = need(envelope.get("msg"), "msg", "a dict")?;
        let display_name = need(body.get("project").and_then(|p| p.text(MAX_FIELD)), "msg.project", "a job name")?;
        let number = need(body.get("build").and_then(|b| b.uint()), "msg.build", "a build number")?;
        return Ok(Event::BuildFinished { display_name, number, status: status.to_string() });
    }
    Ok(Event::NotOurs("not a topic poormanci listens to".into()))
}

/// Why this message can be dropped at once, if it can: most bus traffic is
/// about projects poormanci does not build, and the target project is read
/// with a few lookups, before anything else.
pub fn not_ours_early<N: Node>(cfg: &Config, topic: &str, envelope: &N) -> Option<String> {
    pr_project(cfg, topic, envelope).and_then(|p| crate::policy::unconfigured(cfg, &p))
}

/// The target project of a pull-request message.
fn pr_project<N: Node>(cfg: &Config, topic: &str, envelope: &N) -> Option<String> {
    topic.strip_prefix(cfg.pagure.peer.topic.as_str())?.strip_prefix(".pull-request.")?;
    let body = envelope.get("msg")?;
    let pr = body.get("pullrequest").or_else(|| body.get("pull_request"))?;
    project_path(&pr.get("project")?, "pullrequest.project").ok()
}

fn name_of<N: Node>(node: &N, field: &str) -> Result<String, Malformed> {
    need(node.get("name").and_then(|n| n.text(MAX_FIELD)), &format!("{field}.name"), "a string")
}

/// `[namespace/]name` of a project dict.
fn project_path<N: Node>(node: &N, field: &str) -> Result<String, Malformed> {
    let name = name_of(node, field)?;
    Ok(match node.get("namespace").and_then(|n| n.text(MAX_FIELD)).filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    })
}

pub fn parse_pr<N: Node>(pr: &N) -> Result<PullRequest, Malformed> {
    let project = need(pr.get("project"), "pullrequest.project", "a dict")?;
    let status = match pr.get("status") {
        // Before 2016 the status was a boolean: open or not.
        Some(s) => match (s.boolean(), s.text(32).as_deref()) {
            (Some(true), _) | (_, Some("Open")) => PrStatus::Open,
            (Some(false), _) | (_, Some("Closed")) => PrStatus::Closed,
            (_, Some("Merged")) => PrStatus::Merged,
            _ => return Err(Malformed("pullrequest.status: expected Open, Merged, Closed, true or false".into())),
        },
        None => return Err(Malformed("pullrequest.status: missing".into())),
    };
    let source = match pr.get("repo_from") {
        Some(repo) if repo.get("parent").is_some() => {
            let user = need(repo.get("user"), "pullrequest.repo_from.user", "a dict")?;
            Source::Fork { user: name_of(&user, "pullrequest.repo_from.user")? }
        }
        Some(_) => Source::SameProject,
        None => Source::Remote {
            url: need(pr.get("remote_git").and_then(|u| u.text(MAX_FIELD)), "pullrequest.remote_git", "a git URL when repo_from is null")?,
        },
    };
    let last_comment = pr.get("comments").and_then(|c| c.last()).map(|c| Comment {
        text: c.get("comment").and_then(|t| t.text(MAX_COMMENT)),
        notification: c.get("notification").and_then(|n| n.boolean()).unwrap_or(false),
        user: c.get("user").and_then(|u| u.get("name")).and_then(|n| n.text(MAX_FIELD)),
    });
    let text = |key: &str| need(pr.get(key).and_then(|v| v.text(MAX_FIELD)), &format!("pullrequest.{key}"), "a string");
    Ok(PullRequest {
        project: project_path(&project, "pullrequest.project")?,
        target_is_fork: project.get("parent").is_some(),
        id: need(pr.get("id").and_then(|i| i.uint()), "pullrequest.id", "a number")?,
        status,
        target_branch: text("branch")?,
        source_branch: text("branch_from")?,
        commit: pr.get("commit_stop").and_then(|c| c.text(MAX_FIELD)),
        author: name_of(&need(pr.get("user"), "pullrequest.user", "a dict")?, "pullrequest.user")?,
        source,
        last_comment,
        title: pr.get("title").and_then(|t| t.text(MAX_FIELD)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{config, fixture};

    fn parse_fixture(name: &str) -> Message {
        let v = fixture(name);
        parse(&config(), v["topic"].as_str().unwrap(), &&v).unwrap()
    }

    fn pr_of(m: &Message) -> &PullRequest {
        match &m.event {
            Event::PullRequest(e) => &e.pr,
            other => panic!("not a PR event: {other:?}"),
        }
    }

    #[test]
    fn every_fixture_parses() {
        for name in crate::testing::fixture_names() {
            let v = fixture(&name);
            let Some(topic) = v["topic"].as_str() else { continue };
            // The fixtures use the dev and prod prefixes: read them with a matching config.
            let mut cfg = config();
            cfg.pagure.peer.topic = topic.split(".pull-request.").next().unwrap().to_string();
            parse(&cfg, topic, &&v).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn new_pr_2016_from_a_fork() {
        let m = parse_fixture("prod2016.pagure.pull-request.new.pungi-235");
        assert_eq!(m.msg_id.as_deref(), Some("2016-4b71901b-5b39-4096-9c01-2e98efac7a37"));
        let pr = pr_of(&m);
        assert_eq!((pr.project.as_str(), pr.id, pr.status), ("pungi", 235, PrStatus::Open));
        assert_eq!(pr.source, Source::Fork { user: "lsedlar".into() });
        assert_eq!((pr.target_branch.as_str(), pr.source_branch.as_str()), ("master", "lorax-dir"));
        assert_eq!(pr.commit, None);
        assert_eq!(pr.last_comment, None);
    }

    #[test]
    fn rebased_notification_is_the_last_comment() {
        let m = parse_fixture("prod2016.pagure.pull-request.comment.added.rebased-notification.pagure-843");
        let c = pr_of(&m).last_comment.clone().unwrap();
        assert_eq!(c.text.as_deref(), Some("Pull-Request has been rebased"));
        assert!(c.notification);
    }

    #[test]
    fn jenkins_message() {
        let mut cfg = config();
        cfg.jenkins.peer.topic = "org.fedoraproject.prod.jenkins".into();
        let v = fixture("jenkins.build.passed.1");
        let m = parse(&cfg, v["topic"].as_str().unwrap(), &&v).unwrap();
        assert_eq!(m.event, Event::BuildFinished { display_name: "fedora-mobile".into(), number: 174, status: "passed".into() });
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cfg = config();
        let topic = "io.pagure.prod.pagure.pull-request.new";
        let mut v = fixture("prod2016.pagure.pull-request.new.pungi-235");
        v["msg"]["pullrequest"]["id"] = serde_json::json!("235; rm -rf /");
        assert_eq!(parse(&cfg, topic, &&v).unwrap_err().0, "pullrequest.id: expected a number");
        for body in [serde_json::json!("a string"), serde_json::json!([1, 2]), serde_json::Value::Null, serde_json::json!({"msg": 3})] {
            assert!(parse(&cfg, topic, &&body).is_err());
        }
    }

    #[test]
    fn huge_comment_is_not_read() {
        let cfg = config();
        let mut v = fixture("prod2016.pagure.pull-request.comment.added.rebased-notification.pagure-843");
        let comments = v["msg"]["pullrequest"]["comments"].as_array_mut().unwrap();
        comments.last_mut().unwrap()["comment"] = serde_json::json!("x".repeat(5 << 20));
        let m = parse(&cfg, "io.pagure.prod.pagure.pull-request.comment.added", &&v).unwrap();
        assert_eq!(pr_of(&m).last_comment.as_ref().unwrap().text, None);
    }
}

/// `parse` never panics, whatever JSON it is given: random values, and real
/// fixtures with one part replaced by a random value.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::testing::{config, fixture, fixture_names};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};
    use std::sync::OnceLock;

    /// The keys `parse` reads, so that random dicts reach past the first check.
    const KEYS: &[&str] = &[
        "msg", "msg_id", "pullrequest", "pull_request", "agent", "project", "build", "status", "repo_from", "parent",
        "user", "name", "namespace", "remote_git", "comments", "comment", "notification", "id", "branch",
        "branch_from", "commit_stop",
    ];

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![4 => prop::sample::select(KEYS).prop_map(String::from), 1 => "\\PC{0,8}"]
    }

    /// Any JSON value, depth-limited.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec!["Open", "Merged", "Closed", "master", "-x", "pungi", "", "x\u{e9}"]).prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        let cfg = config();
        let pagure = format!("{}.pull-request.", cfg.pagure.peer.topic);
        let jenkins = format!("{}.build.", cfg.jenkins.peer.topic);
        prop_oneof![
            3 => prop::sample::select(vec!["new", "updated", "rebased", "comment.added", "closed", "flag.added", "tag.added", ""])
                .prop_map(move |a| format!("{pagure}{a}")),
            1 => prop::sample::select(vec!["start", "passed", "failed", "aborted", ""]).prop_map(move |s| format!("{jenkins}{s}")),
            1 => "\\PC{0,40}",
        ]
    }

    /// The message fixtures, read once, on the topics the test config listens to.
    fn fixtures() -> &'static [(String, Value)] {
        static FIXTURES: OnceLock<Vec<(String, Value)>> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            fixture_names()
                .iter()
                .map(|n| fixture(n))
                .filter_map(|v| Some((v["topic"].as_str()?.replace("io.pagure.dev.", "io.pagure.prod."), v)))
                .collect()
        })
    }

    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    /// Every path to a value in `v`, the root included.
    fn paths(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(prefix.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    prefix.push(Step::Key(k.clone()));
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    prefix.push(Step::Index(i));
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }

    fn at<'a>(mut v: &'a mut Value, path: &[Step]) -> &'a mut Value {
        for step in path {
            v = match step {
                Step::Key(k) => &mut v[k.as_str()],
                Step::Index(i) => &mut v[*i],
            };
        }
        v
    }

    /// A fixture with the value at one of its paths replaced.
    fn damaged_fixture() -> impl Strategy<Value = (String, Value)> {
        (0..fixtures().len()).prop_flat_map(|i| {
            let (topic, v) = fixtures()[i].clone();
            let mut all = Vec::new();
            paths(&v, &mut Vec::new(), &mut all);
            (prop::sample::select(all), json_value()).prop_map(move |(path, new)| {
                let mut v = v.clone();
                *at(&mut v, &path) = new;
                (topic.clone(), v)
            })
        })
    }

    /// A leaf where `parse` expects one: mostly of the right type.
    fn field() -> BoxedStrategy<Value> {
        prop_oneof![
            8 => prop::sample::select(vec!["Open", "Closed", "master", "pungi", "", "-x", "\u{e9}t\u{e9}", "a\u{e9}"]).prop_map(Value::from),
            4 => "\\PC{0,12}".prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<bool>().prop_map(Value::from),
            1 => json_value(),
        ]
        .boxed()
    }

    fn dict(keys: &'static [&'static str]) -> BoxedStrategy<Value> {
        prop_oneof![
            8 => vec(field(), keys.len()).prop_map(move |vals| Value::Object(keys.iter().map(|k| k.to_string()).zip(vals).collect())),
            1 => json_value(),
        ]
        .boxed()
    }

    /// An envelope shaped like Pagure's and Jenkins' messages, every leaf random.
    fn envelope() -> impl Strategy<Value = Value> {
        let user = || dict(&["name"]);
        let project = || {
            (dict(&["name", "namespace"]), prop::option::of(user()), prop::option::of(json_value())).prop_map(|(mut p, u, parent)| {
                if let Value::Object(m) = &mut p {
                    m.insert("user".into(), u.unwrap_or(Value::Null));
                    m.insert("parent".into(), parent.unwrap_or(Value::Null));
                }
                p
            })
        };
        let comment = (dict(&["comment", "notification"]), user()).prop_map(|(mut c, u)| {
            c.as_object_mut().map(|m| m.insert("user".into(), u));
            c
        });
        let id = prop_oneof![3 => (0..1000u64).prop_map(Value::from), 1 => field()];
        let status = prop_oneof![
            3 => prop::sample::select(vec![json!("Open"), json!("Merged"), json!("Closed"), json!(true), json!(false)]),
            1 => field(),
        ];
        let pr = (
            (id, status, dict(&["branch", "branch_from", "commit_stop", "remote_git"])),
            user(),
            project(),
            prop::option::of(project()),
            prop_oneof![3 => vec(comment, 0..3).prop_map(Value::Array), 1 => json_value()],
        )
            .prop_map(|((id, status, mut pr), user, project, repo_from, comments)| {
                if let Value::Object(m) = &mut pr {
                    m.insert("id".into(), id);
                    m.insert("status".into(), status);
                    m.insert("user".into(), user);
                    m.insert("project".into(), project);
                    m.insert("repo_from".into(), repo_from.unwrap_or(Value::Null));
                    m.insert("comments".into(), comments);
                }
                pr
            });
        (field(), field(), pr, field(), field()).prop_map(|(msg_id, agent, pr, project, build)| {
            json!({"msg_id": msg_id, "msg": {"agent": agent, "pullrequest": pr, "project": project, "build": build}})
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_a_random_message(topic in topic(), v in envelope()) {
            let cfg = config();
            if let Ok(m) = parse(&cfg, &topic, &&v) {
                prop_assert_eq!(m.topic, topic);
            }
        }

        #[test]
        fn parse_never_panics_on_any_json(topic in topic(), v in json_value()) {
            let cfg = config();
            let _ = parse(&cfg, &topic, &&v);
            // The same value where `parse` looks for the PR, the project and the build.
            let envelope = json!({"msg": {"pullrequest": v.clone(), "pull_request": v.clone(), "project": v.clone(), "build": v}});
            let _ = parse(&cfg, &topic, &&envelope);
        }

        #[test]
        fn parse_never_panics_on_a_damaged_fixture((topic, v) in damaged_fixture()) {
            let cfg = config();
            if let Ok(m) = parse(&cfg, &topic, &&v) {
                prop_assert_eq!(m.topic, topic);
            }
        }
    }
}
