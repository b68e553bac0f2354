//! The `poormanci.*` keys of the fedmsg config, checked once at start.
//!
//! Checking walks the raw JSON value by hand so that every problem is
//! reported at once, each on one line that names the key and what was
//! expected (`poormanci.projects['pungi'][0].token: missing`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

pub const DEFAULT_PAGURE_TOPIC: &str = "io.pagure.prod.pagure";
pub const DEFAULT_JENKINS_TOPIC: &str = "org.fedoraproject.prod.jenkins";

/// A credential: shown as `***` by Debug and Display so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What both HTTP peers share: where, how long to wait, how to trust TLS.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub url: Url,
    pub topic: String,
    pub timeout: Duration,
    pub ca_bundle: Option<PathBuf>,
    pub insecure: bool,
    pub concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct PagureConfig {
    pub peer: PeerConfig,
    pub token: Secret,
    pub flag_name: String,
    pub comment: bool,
    pub user: Option<String>,
    /// How often reports Pagure refused for authorization (401, 403) are
    /// tried again, waiting for a working token.
    pub token_retry: Duration,
    /// A refused command refreshes the project's ACL first, at most once per
    /// project this often (a new committer is heard at once, a flood of
    /// refusals does not become a flood of requests).
    pub acl_refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct JenkinsConfig {
    pub peer: PeerConfig,
    /// HTTP basic auth (user, API token), when both are set.
    pub auth: Option<(String, Secret)>,
    pub follow: bool,
    /// How often a job with a build in flight is looked at (one request
    /// answers for all its builds).
    pub poll_interval: Duration,
    /// The ceiling on follow requests per second to Jenkins: with many
    /// jobs in flight, each is looked at less often.
    pub max_requests_per_second: f64,
    pub queue_timeout: Duration,
    pub build_timeout: Duration,
    /// Cancel a PR's queued or running builds when it gets a newer commit.
    pub cancel_superseded: bool,
    /// Where triggers are posted.
    pub trigger_route: TriggerRoute,
}

/// How poormanci asks Jenkins for a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerRoute {
    /// `/job/<job>/buildWithParameters`: needs Overall/Read for whoever
    /// posts (anonymous or the API user) and a CSRF crumb without an API token.
    Job,
    /// `/buildByToken/buildWithParameters?job=<job>` (build-token-root
    /// plugin): the job token alone, no Overall/Read, no crumb.
    BuildByToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// Job path, `folder/job` for a job in a folder.
    pub job: String,
    pub token: Secret,
    /// The name Jenkins' bus messages give this job.
    pub display_name: String,
    /// Target branches this job builds; empty: every branch.
    pub branches: Vec<BranchPattern>,
    /// Static extra parameters sent with every trigger.
    pub parameters: Vec<(String, String)>,
}

/// A target-branch pattern: a regular expression that must match the whole
/// branch name (`f4[0-9]` matches `f41`, not `f410` nor `xf41`).
#[derive(Debug, Clone)]
pub struct BranchPattern {
    pattern: String,
    regex: regex::Regex,
}

impl BranchPattern {
    pub fn new(pattern: &str) -> Result<BranchPattern, regex::Error> {
        Ok(BranchPattern { pattern: pattern.to_string(), regex: regex::Regex::new(&format!("^(?:{pattern})$"))? })
    }

    pub fn is_match(&self, branch: &str) -> bool {
        self.regex.is_match(branch)
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl PartialEq for BranchPattern {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}
impl Eq for BranchPattern {}

/// The parameters poormanci sets itself; a job's `parameters` cannot.
pub const OWN_PARAMETERS: &[&str] = &["token", "cause", "REPO", "BRANCH", "BRANCH_TO", "delay"];

/// Whose pull requests build on their own, and whose commands count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub users: Vec<String>,
    /// Pagure groups whose members are trusted.
    pub groups: Vec<String>,
    /// The project's owner, admins and committers (users and groups), as Pagure reports them.
    pub committers: bool,
}

impl Default for Trust {
    /// Secure by default: only the project's own committers.
    fn default() -> Trust {
        Trust { users: Vec::new(), groups: Vec::new(), committers: true }
    }
}

/// The phrases that are commands when alone on a line of a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    pub ok_to_test: String,
    pub retest: String,
    /// Followed by a job name: `/test pungi-pr`.
    pub test: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub pagure: PagureConfig,
    pub jenkins: JenkinsConfig,
    /// Pagure path `[namespace/]name` -> jobs.
    pub projects: BTreeMap<String, Vec<JobConfig>>,
    /// The global trust, and per project where a project sets its own.
    pub trusted: Trust,
    pub project_trust: BTreeMap<String, Trust>,
    pub commands: Commands,
    pub state_dir: PathBuf,
    pub retry_deadline: Duration,
    pub approve: Approve,
    /// `poormanci.web` (status page): read in crate::web::config.
    pub web: crate::web::config::WebConfig,
    /// `poormanci.store`: where the state lives.
    pub store: StoreConfig,
}

/// Where the state lives: SQLite in state_dir (one instance), or a
/// PostgreSQL database several instances share.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// None: SQLite in state_dir.
    pub postgresql: Option<PostgresConfig>,
    /// How long a task claimed by one instance is its own: another instance
    /// takes it over when the lease ends without word (the instance died).
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// libpq's `key=value` connection string, without a password.
    pub dsn: String,
    pub password_file: Option<PathBuf>,
}

/// What a trusted person's `/ok-to-test` approves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approve {
    /// The commit that was the PR's head when the comment was written; each
    /// later push of an untrusted author waits again.
    Commit,
    /// The pull request: its later commits build too (as Prow does).
    PullRequest,
}

impl Config {
    /// Check the whole merged fedmsg config; `Err` holds every problem.
    pub fn from_value(root: &Value) -> Result<Config, Vec<String>> {
        Self::check(root).0
    }

    /// Check the whole merged fedmsg config: the config or every problem,
    /// and warnings either way (unknown keys, which are otherwise ignored).
    pub fn check(root: &Value) -> (Result<Config, Vec<String>>, Vec<String>) {
        let mut c = Checker::default();
        let config = c.config(root);
        (config, c.warnings)
    }

    /// What `poormanci check-config` prints: projects, jobs, topics, state_dir, status page.
    pub fn summary(&self) -> Value {
        let projects: Map<String, Value> = self
            .projects
            .iter()
            .map(|(name, jobs)| {
                let jobs = jobs
                    .iter()
                    .map(|j| {
                        serde_json::json!({
                            "job": j.job,
                            "display_name": j.display_name,
                            "branches": j.branches.iter().map(BranchPattern::as_str).collect::<Vec<_>>(),
                            "parameters": j.parameters.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<Map<String, Value>>(),
                        })
                    })
                    .collect();
                (name.clone(), Value::Array(jobs))
            })
            .collect();
        let web = serde_json::json!({
            "listen": self.web.listen.map(|a| a.to_string()),
            "public_url": self.web.public_url.as_ref().map(|u| u.to_string()),
            "history_days": self.web.history_days,
        });
        serde_json::json!({"projects": projects, "topics": self.topics(), "state_dir": self.state_dir.display().to_string(), "web": web})
    }
}

/// The keys each dict may hold; anything else is reported as unknown.
const ROOT_KEYS: &[&str] = &[
    "poormanci.enabled",
    "poormanci.pagure",
    "poormanci.jenkins",
    "poormanci.projects",
    "poormanci.trusted",
    "poormanci.commands",
    "poormanci.state_dir",
    "poormanci.retry_deadline",
    "poormanci.approve",
    "poormanci.web",
    "poormanci.store",
];
const STORE_KEYS: &[&str] = &["backend", "dsn", "password_file", "lease"];
const PEER_KEYS: &[&str] = &["url", "topic", "timeout", "ca_bundle", "insecure", "concurrency"];
const PAGURE_KEYS: &[&str] = &["token", "flag_name", "comment", "user", "token_retry", "acl_refresh"];
const JENKINS_KEYS: &[&str] =
    &["user", "api_token", "follow", "poll_interval", "max_requests_per_second", "queue_timeout", "build_timeout", "cancel_superseded", "trigger_route"];
const COMMAND_KEYS: &[&str] = &["ok_to_test", "retest", "test"];
const PROJECT_KEYS: &[&str] = &["jobs", "trusted"];
const JOB_KEYS: &[&str] = &["job", "token", "display_name", "branches", "parameters"];

impl Checker {
    fn config(&mut self, root: &Value) -> Result<Config, Vec<String>> {
        let c = self;
        let root = match root.as_object() {
            Some(root) => root,
            None => return Err(vec!["config: expected a dict".into()]),
        };
        let ours: Section = root.iter().filter(|(k, _)| k.starts_with("poormanci.")).map(|(k, v)| (k.clone(), v.clone())).collect();
        c.unknown_keys("", &ours, &[ROOT_KEYS]);
        let pagure = c.section(root, "poormanci.pagure");
        let jenkins = c.section(root, "poormanci.jenkins");
        c.unknown_keys("poormanci.pagure.", &pagure, &[PEER_KEYS, PAGURE_KEYS]);
        c.unknown_keys("poormanci.jenkins.", &jenkins, &[PEER_KEYS, JENKINS_KEYS]);
        let pagure_peer = c.peer("poormanci.pagure", &pagure, DEFAULT_PAGURE_TOPIC);
        let token = c.req_str("poormanci.pagure", &pagure, "token");
        let flag_name = c.opt_str("poormanci.pagure", &pagure, "flag_name");
        let comment = c.opt_bool("poormanci.pagure", &pagure, "comment", true);
        let user = c.opt_str("poormanci.pagure", &pagure, "user");
        let token_retry = c.duration("poormanci.pagure", &pagure, "token_retry", 300.0);
        let acl_refresh = c.duration("poormanci.pagure", &pagure, "acl_refresh", 60.0);

        let jenkins_peer = c.peer("poormanci.jenkins", &jenkins, DEFAULT_JENKINS_TOPIC);

        let j_user = c.opt_str("poormanci.jenkins", &jenkins, "user");
        let j_api = c.opt_str("poormanci.jenkins", &jenkins, "api_token");
        let auth = match (j_user, j_api) {
            (Some(u), Some(t)) => Some((u, Secret(t))),
            (None, None) => None,
            _ => {
                c.problem("poormanci.jenkins.user/api_token: set both or neither");
                None
            }
        };
        let follow = c.opt_bool("poormanci.jenkins", &jenkins, "follow", true);
        let poll_interval = c.duration("poormanci.jenkins", &jenkins, "poll_interval", 2.0);
        let max_requests_per_second = c.duration("poormanci.jenkins", &jenkins, "max_requests_per_second", 20.0).as_secs_f64();
        let queue_timeout = c.duration("poormanci.jenkins", &jenkins, "queue_timeout", 3600.0);
        let build_timeout = c.duration("poormanci.jenkins", &jenkins, "build_timeout", 21600.0);
        let cancel_superseded = c.opt_bool("poormanci.jenkins", &jenkins, "cancel_superseded", true);
        let trigger_route = match c.opt_str("poormanci.jenkins", &jenkins, "trigger_route").as_deref() {
            None | Some("job") => TriggerRoute::Job,
            Some("buildByToken") => TriggerRoute::BuildByToken,
            Some(_) => c.wrong("poormanci.jenkins.trigger_route", "\"job\" or \"buildByToken\"").unwrap_or(TriggerRoute::Job),
        };

        let trusted = c.trust("poormanci.trusted", root.get("poormanci.trusted"), &Trust::default());
        let (projects, project_trust) = c.projects(root.get("poormanci.projects"), &trusted);
        let commands = c.opt_section(root, "poormanci.commands");
        c.unknown_keys("poormanci.commands.", &commands, &[COMMAND_KEYS]);
        let commands = Commands {
            ok_to_test: c.opt_str("poormanci.commands", &commands, "ok_to_test").unwrap_or_else(|| "/ok-to-test".into()),
            retest: c.opt_str("poormanci.commands", &commands, "retest").unwrap_or_else(|| "/retest".into()),
            test: c.opt_str("poormanci.commands", &commands, "test").unwrap_or_else(|| "/test".into()),
        };
        let state_dir = match root.get("poormanci.state_dir") {
            Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
            None | Some(Value::Null) => c.missing("poormanci.state_dir", "a directory path"),
            Some(_) => c.wrong("poormanci.state_dir", "a directory path"),
        };
        let retry_deadline = c.duration_at("poormanci.retry_deadline", root.get("poormanci.retry_deadline"), 3600.0);
        let approve = match root.get("poormanci.approve").and_then(|v| if v.is_null() { None } else { Some(v) }) {
            None => Approve::Commit,
            Some(Value::String(s)) if s == "commit" => Approve::Commit,
            Some(Value::String(s)) if s == "pull-request" => Approve::PullRequest,
            Some(_) => c.wrong("poormanci.approve", "\"commit\" or \"pull-request\"").unwrap_or(Approve::Commit),
        };
        if let Some(Value::Object(web)) = root.get("poormanci.web") {
            c.unknown_keys("poormanci.web.", web, &[crate::web::config::KEYS]);
        }
        let web = crate::web::config::parse(root).unwrap_or_else(|problems| {
            c.problems.extend(problems);
            Default::default()
        });
        let store = c.store(root);

        if !c.problems.is_empty() {
            return Err(c.problems.clone());
        }
        // Every Option below is Some: a None recorded a problem above.
        Ok(Config {
            pagure: PagureConfig {
                peer: pagure_peer.unwrap(),
                token: Secret(token.unwrap()),
                flag_name: flag_name.unwrap_or_else(|| "Jenkins".into()),
                comment,
                user,
                token_retry,
                acl_refresh,
            },
            jenkins: JenkinsConfig {
                peer: jenkins_peer.unwrap(),
                auth,
                follow,
                poll_interval,
                max_requests_per_second,
                queue_timeout,
                build_timeout,
                cancel_superseded,
                trigger_route,
            },
            projects,
            trusted,
            project_trust,
            commands,
            state_dir: state_dir.unwrap(),
            retry_deadline,
            approve,
            web,
            store,
        })
    }
}

impl Config {
    /// The topic prefixes to subscribe to.
    pub fn topics(&self) -> Vec<String> {
        vec![
            format!("{}.pull-request.", self.pagure.peer.topic),
            format!("{}.build.", self.jenkins.peer.topic),
        ]
    }

    /// Jobs whose bus messages carry this display name.
    pub fn jobs_named<'a>(&'a self, display_name: &'a str) -> impl Iterator<Item = (&'a str, &'a JobConfig)> + 'a {
        self.projects
            .iter()
            .flat_map(|(p, jobs)| jobs.iter().map(move |j| (p.as_str(), j)))
            .filter(move |(_, j)| j.display_name == display_name)
    }

    pub fn trust(&self, project: &str) -> &Trust {
        self.project_trust.get(project).unwrap_or(&self.trusted)
    }

    pub fn job(&self, project: &str, job: &str) -> Option<&JobConfig> {
        self.projects.get(project)?.iter().find(|j| j.job == job)
    }
}

/// The default display name Jenkins' fedmsg notifier uses: the job's name,
/// or for a job in a folder the top folder's name.
fn default_display_name(job: &str) -> String {
    job.split('/').next().unwrap_or(job).to_string()
}

#[derive(Default)]
struct Checker {
    problems: Vec<String>,
    warnings: Vec<String>,
}

type Section = Map<String, Value>;

impl Checker {
    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// One warning per key of `m` that is none of `known`, with the closest
    /// known key when it is close (a typo such as `cancel_superseeded`).
    fn unknown_keys(&mut self, prefix: &str, m: &Section, known: &[&[&str]]) {
        let known: Vec<&str> = known.iter().flat_map(|k| k.iter().copied()).collect();
        for key in m.keys().filter(|k| !known.contains(&k.as_str())) {
            let close = known
                .iter()
                .map(|k| (strsim::damerau_levenshtein(key, k), *k))
                .filter(|(d, k)| *d <= 2.max(k.len() / 4))
                .min();
            let hint = close.map(|(_, k)| format!("; did you mean {prefix}{k}?")).unwrap_or_default();
            self.warnings.push(format!("{prefix}{key}: unknown key, ignored{hint}"));
        }
    }

    fn missing<T>(&mut self, key: &str, expected: &str) -> Option<T> {
        self.problem(format!("{key}: missing (expected {expected})"));
        None
    }

    fn wrong<T>(&mut self, key: &str, expected: &str) -> Option<T> {
        self.problem(format!("{key}: expected {expected}"));
        None
    }

    fn section(&mut self, root: &Section, key: &str) -> Section {
        match root.get(key) {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => self.missing(key, "a dict").unwrap_or_default(),
            Some(_) => self.wrong(key, "a dict").unwrap_or_default(),
        }
    }

    fn opt_section(&mut self, root: &Section, key: &str) -> Section {
        match root.get(key) {
            None | Some(Value::Null) => Section::new(),
            _ => self.section(root, key),
        }
    }

    fn str_list(&mut self, key: &str, v: Option<&Value>) -> Vec<String> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(|i| i.as_str().is_some_and(|s| !s.is_empty())) => {
                items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
            }
            Some(_) => self.wrong(key, "a list of names").unwrap_or_default(),
        }
    }

    /// A `trusted` dict; keys left out keep the `base` value.
    fn trust(&mut self, key: &str, v: Option<&Value>, base: &Trust) -> Trust {
        let m = match v {
            None | Some(Value::Null) => return base.clone(),
            Some(Value::Object(m)) => m,
            Some(_) => return self.wrong(key, "a dict with users, groups, committers").unwrap_or_else(|| base.clone()),
        };
        for k in m.keys().filter(|k| !["users", "groups", "committers"].contains(&k.as_str())) {
            self.problem(format!("{key}.{k}: unknown key (expected users, groups, committers)"));
        }
        Trust {
            users: if m.contains_key("users") { self.str_list(&format!("{key}.users"), m.get("users")) } else { base.users.clone() },
            groups: if m.contains_key("groups") { self.str_list(&format!("{key}.groups"), m.get("groups")) } else { base.groups.clone() },
            committers: self.opt_bool(key, m, "committers", base.committers),
        }
    }

    fn req_str(&mut self, sect: &str, m: &Section, key: &str) -> Option<String> {
        let full = format!("{sect}.{key}");
        match m.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            None | Some(Value::Null) => self.missing(&full, "a string"),
            Some(_) => self.wrong(&full, "a non-empty string"),
        }
    }

    fn opt_str(&mut self, sect: &str, m: &Section, key: &str) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => self.wrong(&format!("{sect}.{key}"), "a non-empty string or None"),
        }
    }

    fn opt_bool(&mut self, sect: &str, m: &Section, key: &str, default: bool) -> bool {
        match m.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => self.wrong(&format!("{sect}.{key}"), "True or False").unwrap_or(default),
        }
    }

    /// `poormanci.store`: the backend and, for PostgreSQL, where and how to connect.
    fn store(&mut self, root: &Section) -> StoreConfig {
        let store = self.opt_section(root, "poormanci.store");
        self.unknown_keys("poormanci.store.", &store, &[STORE_KEYS]);
        let lease = self.duration("poormanci.store", &store, "lease", 60.0);
        let postgresql = match self.opt_str("poormanci.store", &store, "backend").as_deref() {
            None | Some("sqlite") => None,
            Some("postgresql") => {
                let dsn = self.req_str("poormanci.store", &store, "dsn");
                let password_file = self.opt_str("poormanci.store", &store, "password_file").map(PathBuf::from);
                match dsn.as_deref().map(str::parse::<postgres::Config>) {
                    None => None,
                    Some(Err(e)) => {
                        self.problem(format!("poormanci.store.dsn: not a PostgreSQL connection string ({e})"));
                        None
                    }
                    // Not repeated: the message would show the password.
                    Some(Ok(c)) if c.get_password().is_some() => {
                        self.problem("poormanci.store.dsn: has a password in it; put the password in a file named by poormanci.store.password_file");
                        None
                    }
                    Some(Ok(_)) => dsn.map(|dsn| PostgresConfig { dsn, password_file }),
                }
            }
            Some(_) => self.wrong("poormanci.store.backend", "\"sqlite\" or \"postgresql\""),
        };
        StoreConfig { postgresql, lease }
    }

    fn duration(&mut self, sect: &str, m: &Section, key: &str, default: f64) -> Duration {
        self.duration_at(&format!("{sect}.{key}"), m.get(key), default)
    }

    fn duration_at(&mut self, key: &str, v: Option<&Value>, default: f64) -> Duration {
        match v {
            None | Some(Value::Null) => Duration::from_secs_f64(default),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
                _ => self.wrong(key, "a positive number of seconds").unwrap_or_default(),
            },
            Some(_) => self.wrong(key, "a positive number of seconds").unwrap_or_default(),
        }
    }

    /// A URL with `user:password@` is refused: it would show in every flag's
    /// link, log line, `cause` and the state store. The line never repeats it.
    fn url_without_credentials(&mut self, key: &str, url: Url) -> Option<Url> {
        if url.username().is_empty() && url.password().is_none() {
            return Some(url);
        }
        let instead = match key {
            "poormanci.jenkins.url" => "put the user in poormanci.jenkins.user and the API token in poormanci.jenkins.api_token",
            "poormanci.pagure.url" => "put the API token in poormanci.pagure.token",
            _ => "put credentials in their own keys",
        };
        self.problem(format!("{key}: has credentials in it; {instead}"));
        None
    }

    fn peer(&mut self, sect: &str, m: &Section, default_topic: &str) -> Option<PeerConfig> {
        let url = match self.req_str(sect, m, "url") {
            Some(s) => match Url::parse(&s) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => self.url_without_credentials(&format!("{sect}.url"), u),
                _ => self.wrong(&format!("{sect}.url"), "an http:// or https:// URL"),
            },
            None => None,
        };
        let topic = self.opt_str(sect, m, "topic").unwrap_or_else(|| default_topic.to_string());
        let topic = topic.trim_end_matches('.').to_string();
        let timeout = self.duration(sect, m, "timeout", 30.0);
        let ca_bundle = self.opt_str(sect, m, "ca_bundle").map(PathBuf::from);
        let insecure = self.opt_bool(sect, m, "insecure", false);
        let concurrency = match m.get("concurrency") {
            None | Some(Value::Null) => 32,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1024).contains(&n) => n as usize,
                _ => self.wrong(&format!("{sect}.concurrency"), "a whole number from 1 to 1024").unwrap_or(32),
            },
        };
        Some(PeerConfig { url: url?, topic, timeout, ca_bundle, insecure, concurrency })
    }

    /// A job's `branches`: a non-empty list of valid regular expressions.
    fn branches(&mut self, key: &str, v: Option<&Value>) -> Vec<BranchPattern> {
        let items = match v {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(_) => return self.wrong(key, "a non-empty list of branch patterns (regular expressions)").unwrap_or_default(),
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().filter(|s| !s.is_empty()).map(BranchPattern::new) {
                Some(Ok(p)) => out.push(p),
                // The regex crate's message is several lines; its last says what is wrong.
                Some(Err(e)) => {
                    let why = e.to_string();
                    let why = why.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().trim_start_matches("error: ");
                    self.problem(format!("{key}[{i}]: not a valid regular expression: {why}"));
                }
                None => self.problem(format!("{key}[{i}]: expected a branch pattern (a non-empty string)")),
            }
        }
        out
    }

    /// A job's `parameters`: a dict of name -> string, none of poormanci's own.
    fn parameters(&mut self, key: &str, v: Option<&Value>) -> Vec<(String, String)> {
        let m = match v {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return self.wrong(key, "a dict of parameter name -> string").unwrap_or_default(),
        };
        let mut out = Vec::new();
        for (name, value) in m {
            if let Some(own) = OWN_PARAMETERS.iter().find(|p| p.eq_ignore_ascii_case(name)) {
                self.problem(format!("{key}['{name}']: poormanci sets {own} itself"));
                continue;
            }
            if name.is_empty() || name.chars().any(|c| c.is_control()) {
                self.problem(format!("{key}[{name:?}]: expected a parameter name"));
                continue;
            }
            match value.as_str() {
                Some(s) => out.push((name.clone(), s.to_string())),
                None => self.problem(format!("{key}['{name}']: expected a string")),
            }
        }
        out
    }

    fn projects(&mut self, v: Option<&Value>, trusted: &Trust) -> (BTreeMap<String, Vec<JobConfig>>, BTreeMap<String, Trust>) {
        const KEY: &str = "poormanci.projects";
        let (mut out, mut trust) = (BTreeMap::new(), BTreeMap::new());
        let map = match v {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => return self.missing(KEY, "a dict of project -> list of jobs").unwrap_or_default(),
            Some(_) => return self.wrong(KEY, "a dict of project -> list of jobs").unwrap_or_default(),
        };
        for (project, value) in map {
            let pkey = format!("{KEY}[{project:?}]").replace('"', "'");
            if !valid_project_path(project) {
                self.problem(format!("{pkey}: expected a Pagure path \"name\" or \"namespace/name\""));
                continue;
            }
            // A list of jobs, or {"jobs": [...], "trusted": {...}} for a project's own trust.
            let (jobs, jkey) = match value {
                Value::Object(m) => {
                    self.unknown_keys(&format!("{pkey}."), m, &[PROJECT_KEYS]);
                    trust.insert(project.clone(), self.trust(&format!("{pkey}.trusted"), m.get("trusted"), trusted));
                    (m.get("jobs").unwrap_or(&Value::Null), format!("{pkey}.jobs"))
                }
                other => (other, pkey.clone()),
            };
            let list = match jobs {
                Value::Array(list) if !list.is_empty() => list,
                _ => {
                    self.problem(format!("{jkey}: expected a non-empty list of jobs"));
                    continue;
                }
            };
            let mut parsed = Vec::new();
            for (i, job) in list.iter().enumerate() {
                let jkey = format!("{jkey}[{i}]");
                let Some(m) = job.as_object() else {
                    self.problem(format!("{jkey}: expected a dict with \"job\" and \"token\""));
                    continue;
                };
                self.unknown_keys(&format!("{jkey}."), m, &[JOB_KEYS]);
                let name = self.req_str(&jkey, m, "job");
                if let Some(n) = &name {
                    if n.split('/').any(|part| part.is_empty() || part == "." || part == "..") || n.chars().any(char::is_control) {
                        self.problem(format!("{jkey}.job: expected a job path like \"job\" or \"folder/job\""));
                    }
                }
                let token = self.req_str(&jkey, m, "token");
                let display = self.opt_str(&jkey, m, "display_name");
                let branches = self.branches(&format!("{jkey}.branches"), m.get("branches"));
                let parameters = self.parameters(&format!("{jkey}.parameters"), m.get("parameters"));
                if let (Some(job), Some(token)) = (name, token) {
                    if parsed.iter().any(|p: &JobConfig| p.job == job) {
                        self.problem(format!("{jkey}.job: {job:?} is listed twice"));
                        continue;
                    }
                    let display_name = display.unwrap_or_else(|| default_display_name(&job));
                    parsed.push(JobConfig { job, token: Secret(token), display_name, branches, parameters });
                }
            }
            out.insert(project.clone(), parsed);
        }
        (out, trust)
    }
}

fn valid_project_path(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|s| !s.is_empty() && !s.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "poormanci.enabled": true,
            "poormanci.pagure": {"url": "https://pagure.io", "token": "T0K"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org"},
            "poormanci.projects": {
                "pungi": [{"job": "pungi-pr", "token": "BEEFCAFE"}],
                "rpms/python-foo": [{"job": "folder/python-foo", "token": "x"}],
            },
            "poormanci.state_dir": "/var/lib/poormanci",
        })
    }

    #[test]
    fn defaults() {
        let c = Config::from_value(&good()).unwrap();
        assert_eq!(c.pagure.peer.topic, DEFAULT_PAGURE_TOPIC);
        assert_eq!(c.jenkins.peer.topic, DEFAULT_JENKINS_TOPIC);
        assert_eq!(c.pagure.flag_name, "Jenkins");
        assert!(c.pagure.comment && c.jenkins.follow);
        assert_eq!(c.jenkins.trigger_route, TriggerRoute::Job);
        assert_eq!(c.projects["rpms/python-foo"][0].display_name, "folder");
        assert_eq!(c.topics(), ["io.pagure.prod.pagure.pull-request.", "org.fedoraproject.prod.jenkins.build."]);
    }

    #[test]
    fn every_problem_is_named() {
        let mut v = good();
        v["poormanci.projects"]["pungi"][0].as_object_mut().unwrap().remove("token");
        v["poormanci.jenkins"]["url"] = json!("ftp://x");
        v["poormanci.pagure"]["comment"] = json!("yes");
        let errs = Config::from_value(&v).unwrap_err();
        assert_eq!(
            errs,
            [
                "poormanci.pagure.comment: expected True or False",
                "poormanci.jenkins.url: expected an http:// or https:// URL",
                "poormanci.projects['pungi'][0].token: missing (expected a string)",
            ]
        );
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_repeating_them() {
        let mut v = good();
        v["poormanci.jenkins"]["url"] = json!("https://ci:S3CRET@jenkins.example.org/");
        v["poormanci.pagure"]["url"] = json!("https://T0KEN@pagure.io");
        let errs = Config::from_value(&v).unwrap_err();
        assert_eq!(
            errs,
            [
                "poormanci.pagure.url: has credentials in it; put the API token in poormanci.pagure.token",
                "poormanci.jenkins.url: has credentials in it; put the user in poormanci.jenkins.user and the API token in poormanci.jenkins.api_token",
            ]
        );
    }

    #[test]
    fn trigger_route() {
        let mut v = good();
        v["poormanci.jenkins"]["trigger_route"] = json!("buildByToken");
        assert_eq!(Config::from_value(&v).unwrap().jenkins.trigger_route, TriggerRoute::BuildByToken);
        v["poormanci.jenkins"]["trigger_route"] = json!("job");
        assert_eq!(Config::from_value(&v).unwrap().jenkins.trigger_route, TriggerRoute::Job);
        v["poormanci.jenkins"]["trigger_route"] = json!("buildbytoken");
        assert_eq!(
            Config::from_value(&v).unwrap_err(),
            ["poormanci.jenkins.trigger_route: expected \"job\" or \"buildByToken\""]
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Config::from_value(&good()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("T0K") && !shown.contains("BEEFCAFE"), "{shown}");
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use serde_json::json;

    fn config() -> Value {
        json!({
            "poormanci.pagure": {"url": "https://pagure.io", "token": "T0K"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org", "cancel_superseeded": false},
            "poormanci.projects": {
                "pungi": {"jobs": [{"job": "pungi-pr", "token": "x", "brances": ["main"]}], "trusted": {"users": ["a"]}},
            },
            "poormanci.state_dir": "/var/lib/poormanci",
            "poormanci.retry_deadlin": 60,
            "poormanci.enabled": true,
            "other.key": 1,
        })
    }

    #[test]
    fn unknown_keys_are_warned_about_with_the_close_match() {
        let (checked, warnings) = Config::check(&config());
        assert!(checked.is_ok());
        assert_eq!(
            warnings,
            [
                "poormanci.retry_deadlin: unknown key, ignored; did you mean poormanci.retry_deadline?",
                "poormanci.jenkins.cancel_superseeded: unknown key, ignored; did you mean poormanci.jenkins.cancel_superseded?",
                "poormanci.projects['pungi'].jobs[0].brances: unknown key, ignored; did you mean poormanci.projects['pungi'].jobs[0].branches?",
            ]
        );
        let mut v = config();
        v["poormanci.pagure"]["flavour"] = json!(1);
        assert_eq!(Config::check(&v).1[1], "poormanci.pagure.flavour: unknown key, ignored");
    }

    #[test]
    fn branches_and_parameters_are_checked() {
        let mut v = config();
        v["poormanci.projects"]["pungi"]["jobs"][0] = json!({
            "job": "pungi-pr", "token": "x", "branches": ["main", "f4[0-9]", "(", 3],
            "parameters": {"PYTHON": "3.12", "BRANCH": "x", "N": 1},
        });
        assert_eq!(
            Config::check(&v).0.unwrap_err(),
            [
                "poormanci.projects['pungi'].jobs[0].branches[2]: not a valid regular expression: unclosed group",
                "poormanci.projects['pungi'].jobs[0].branches[3]: expected a branch pattern (a non-empty string)",
                "poormanci.projects['pungi'].jobs[0].parameters['BRANCH']: poormanci sets BRANCH itself",
                "poormanci.projects['pungi'].jobs[0].parameters['N']: expected a string",
            ]
        );
        v["poormanci.projects"]["pungi"]["jobs"][0] =
            json!({"job": "pungi-pr", "token": "x", "branches": ["main", "f4[0-9]"], "parameters": {"PYTHON": "3.12"}});
        let c = Config::check(&v).0.unwrap();
        let job = &c.projects["pungi"][0];
        let matches: Vec<bool> = ["main", "f41", "f410", "xf41", "mainline"].iter().map(|b| job.branches.iter().any(|p| p.is_match(b))).collect();
        assert_eq!(matches, [true, true, false, false, false]);
        assert_eq!(job.parameters, [("PYTHON".to_string(), "3.12".to_string())]);
        assert_eq!(c.summary()["projects"]["pungi"][0]["branches"], json!(["main", "f4[0-9]"]));
    }
}
