//! A thin client for the parts of Jenkins' remote API we use: trigger a
//! parameterized build, follow its queue item and build, cancel or stop it.

use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use crate::config::{JenkinsConfig, Secret};
use crate::http::{self, Answer, PeerError};

/// Jenkins' JSON answers are small with `tree=`; a full build answer with
/// change sets and test actions can be larger.
const JSON_CAP: usize = 4 * 1024 * 1024;

/// Keeps build answers small; parsing does not depend on it.
const BUILD_TREE: &str = "number,url,result,building,queueId,actions[causes[note,shortDescription],parameters[name,value]]";

/// Jenkins' client, cheap to clone: clones share the connection pool, the
/// session cookie and the CSRF crumb.
#[derive(Clone)]
pub struct Jenkins {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client,
    base: Url,
    auth: Option<(String, Secret)>,
    crumb: Mutex<Crumb>,
}

enum Crumb {
    Unknown,
    /// The crumb issuer answered 404: CSRF protection is off.
    Off,
    On(HeaderName, HeaderValue),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    pub id: u64,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueState {
    Waiting { why: Option<String> },
    Started { number: u64, url: String },
    Cancelled,
    /// Jenkins forgets queue items about 5 minutes after they start.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildResult {
    Success,
    Unstable,
    Failure,
    Aborted,
    NotBuilt,
    Other(String),
}

impl BuildResult {
    pub fn parse(s: &str) -> BuildResult {
        match s {
            "SUCCESS" => BuildResult::Success,
            "UNSTABLE" => BuildResult::Unstable,
            "FAILURE" => BuildResult::Failure,
            "ABORTED" => BuildResult::Aborted,
            "NOT_BUILT" => BuildResult::NotBuilt,
            other => BuildResult::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BuildResult::Success => "SUCCESS",
            BuildResult::Unstable => "UNSTABLE",
            BuildResult::Failure => "FAILURE",
            BuildResult::Aborted => "ABORTED",
            BuildResult::NotBuilt => "NOT_BUILT",
            BuildResult::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub number: u64,
    pub url: String,
    /// None while building.
    pub result: Option<BuildResult>,
    pub building: bool,
    /// The `cause` given at trigger time (the first remote cause's note).
    pub note: Option<String>,
    pub parameters: Vec<(String, String)>,
    /// The queue item it was started from (`queueId`).
    pub queue_id: Option<u64>,
}

/// `/job/a/job/b` for job path `a/b`, each name percent-encoded.
pub fn job_path(job: &str) -> String {
    let root = Url::parse("http://localhost/").expect("a constant URL");
    http::join(&root, job_segments(job)).path().to_string()
}

/// `<base>/job/a/job/b/`: the job's page, for flags and comments.
pub fn job_url(base: &Url, job: &str) -> String {
    http::join(base, job_segments(job).chain([""])).to_string()
}

fn job_segments(job: &str) -> impl Iterator<Item = &str> {
    job.split('/').flat_map(|name| ["job", name])
}

impl Jenkins {
    pub fn new(cfg: &JenkinsConfig) -> Result<Self, String> {
        // Redirects are answers here (a trigger's 303, a login page's 302),
        // and the crumb is tied to the session cookie.
        let http = http::builder(&cfg.peer)?
            .redirect(Policy::none())
            .cookie_store(true)
            .build()
            .map_err(|e| format!("{}: cannot build an HTTP client: {e}", http::shown_url(&cfg.peer.url)))?;
        Ok(Jenkins {
            inner: Arc::new(Inner {
                http,
                base: cfg.peer.url.clone(),
                auth: cfg.auth.clone(),
                crumb: Mutex::new(Crumb::Unknown),
            }),
        })
    }

    pub fn base(&self) -> &Url {
        &self.inner.base
    }

    /// The job's page, `<base>/job/a/job/b/`.
    pub fn job_url(&self, job: &str) -> String {
        job_url(&self.inner.base, job)
    }

    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        http::join(&self.inner.base, segments)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.inner.http.request(method, url);
        match &self.inner.auth {
            Some((user, token)) => req.basic_auth(user, Some(token.expose())),
            None => req,
        }
    }

    /// Queue a build of `job` with `params`. The job token goes in the form
    /// body, never the URL (URLs end up in access logs).
    ///
    /// `Ok(None)`: Jenkins took the request without naming a queue item
    /// (merged into an identical waiting one, or refused, e.g. a disabled job).
    pub async fn trigger(&self, job: &str, token: &Secret, params: &[(&str, &str)]) -> Result<Option<QueueItem>, PeerError> {
        let url = self.url(job_segments(job).chain(["buildWithParameters"]));
        let what = http::describe(&Method::POST, &url);
        let mut form = vec![("token", token.expose())];
        form.extend_from_slice(params);
        let a = self.post(&what, &url, &form).await?;
        let location = a.location(&url);
        match a.status {
            // 201 names the new (or merged-into) item; 200 from older Jenkins.
            s if s.is_success() => Ok(location.as_ref().and_then(queue_item_of)),
            s if s.is_redirection() => match location {
                Some(loc) => match queue_item_of(&loc) {
                    Some(item) => Ok(Some(item)),
                    // Back to the job's page: merged or refused, no item to follow.
                    None if loc.path().starts_with(self.url(job_segments(job).chain([""])).path()) => Ok(None),
                    None => Err(http::status_error(&what, &a, &redirect_detail(&loc))),
                },
                None => Ok(None),
            },
            StatusCode::FORBIDDEN if a.mentions("crumb") => Err(http::status_error(
                &what,
                &a,
                "Jenkins refused the CSRF crumb (crumbs are tied to the session; an API token needs none)",
            )),
            StatusCode::FORBIDDEN => Err(http::status_error(
                &what,
                &a,
                "the job token is wrong, the user lacks Job/Build, or a CSRF crumb is required",
            )),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &format!("no such job {job}"))),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    pub async fn queue_item(&self, id: u64) -> Result<QueueState, PeerError> {
        let id = id.to_string();
        let url = self.url(["queue", "item", &id, "api", "json"]);
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        match a.status {
            s if s.is_success() => Ok(queue_state(a.json(&what)?)),
            StatusCode::NOT_FOUND => Ok(QueueState::Gone),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    pub async fn build(&self, job: &str, number: u64) -> Result<BuildInfo, PeerError> {
        let n = number.to_string();
        let mut url = self.url(job_segments(job).chain([n.as_str(), "api", "json"]));
        url.query_pairs_mut().append_pair("tree", BUILD_TREE);
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        match a.status {
            s if s.is_success() => Ok(build_info(a.json(&what)?)),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &format!("no build {number} of job {job}"))),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    /// Take a build out of the queue. Done also when Jenkins no longer has it.
    pub async fn cancel_queue_item(&self, id: u64) -> Result<(), PeerError> {
        let mut url = self.url(["queue", "cancelItem"]);
        url.query_pairs_mut().append_pair("id", &id.to_string());
        let what = http::describe(&Method::POST, &url);
        let a = self.post(&what, &url, &[]).await?;
        // 204 in recent Jenkins, a 302 to the queue or a 404 in older ones.
        if a.status.is_success() || a.status.is_redirection() || a.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self.error(&what, &a, "the user lacks Job/Cancel"))
    }

    /// Abort a running build.
    pub async fn stop_build(&self, job: &str, number: u64) -> Result<(), PeerError> {
        let n = number.to_string();
        let url = self.url(job_segments(job).chain([n.as_str(), "stop"]));
        let what = http::describe(&Method::POST, &url);
        let a = self.post(&what, &url, &[]).await?;
        match a.status {
            s if s.is_success() || s.is_redirection() => Ok(()),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &format!("no build {number} of job {job}"))),
            _ => Err(self.error(&what, &a, "the user lacks Job/Cancel")),
        }
    }

    /// POST a form with the CSRF crumb; on a 403 about the crumb, fetch a
    /// fresh one and try once more (the session may have expired).
    async fn post(&self, what: &str, url: &Url, form: &[(&str, &str)]) -> Result<Answer, PeerError> {
        let mut refreshed = false;
        loop {
            let mut req = self.request(Method::POST, url.clone()).form(form);
            if let Some((name, value)) = self.crumb(refreshed).await? {
                req = req.header(name, value);
            }
            let a = http::send("jenkins", what, req, JSON_CAP).await?;
            if a.status == StatusCode::FORBIDDEN && a.mentions("crumb") && !refreshed {
                info!("{what}: crumb refused, fetching a fresh one");
                refreshed = true;
                continue;
            }
            return Ok(a);
        }
    }

    /// The crumb header to send, fetched once and cached.
    async fn crumb(&self, refresh: bool) -> Result<Option<(HeaderName, HeaderValue)>, PeerError> {
        let mut crumb = self.inner.crumb.lock().await;
        if refresh || matches!(*crumb, Crumb::Unknown) {
            match self.fetch_crumb().await {
                Ok(fresh) => *crumb = fresh,
                // Jenkins is down: the POST would fail too.
                Err(e) if e.is_retry() => return Err(e),
                // Refused (anonymous without Overall/Read...): try the POST
                // without one; if Jenkins wants one it says so, and we ask again.
                Err(e) => {
                    warn!("{e}; posting without a CSRF crumb");
                    *crumb = Crumb::Unknown;
                }
            }
        }
        Ok(match &*crumb {
            Crumb::On(name, value) => Some((name.clone(), value.clone())),
            Crumb::Unknown | Crumb::Off => None,
        })
    }

    async fn fetch_crumb(&self) -> Result<Crumb, PeerError> {
        let url = self.url(["crumbIssuer", "api", "json"]);
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        if a.status == StatusCode::NOT_FOUND {
            debug!("{what}: 404, CSRF crumbs are off");
            return Ok(Crumb::Off);
        }
        if !a.status.is_success() {
            return Err(self.error(&what, &a, "cannot get a CSRF crumb"));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Issued {
            crumb_request_field: String,
            crumb: String,
        }
        let issued: Issued = a.json(&what)?;
        let bad = |_| PeerError::Fatal(format!("{what}: the crumb or its header name is not a valid HTTP header"));
        let name = HeaderName::from_bytes(issued.crumb_request_field.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let mut value = HeaderValue::from_str(&issued.crumb).map_err(|e| bad(e.to_string()))?;
        value.set_sensitive(true);
        Ok(Crumb::On(name, value))
    }

    /// The message for an answer no caller-specific case covered.
    fn error(&self, what: &str, a: &Answer, forbidden: &str) -> PeerError {
        let detail = match a.status {
            StatusCode::UNAUTHORIZED if self.inner.auth.is_some() => "user/api_token rejected".to_string(),
            StatusCode::UNAUTHORIZED => "Jenkins wants a login: set poormanci.jenkins user and api_token".to_string(),
            StatusCode::FORBIDDEN if !forbidden.is_empty() => forbidden.to_string(),
            StatusCode::FORBIDDEN => "the user lacks Overall/Read or Job/Read".to_string(),
            s if s.is_redirection() => a.location(&self.inner.base).map(|l| redirect_detail(&l)).unwrap_or_default(),
            _ => String::new(),
        };
        http::status_error(what, a, &detail)
    }
}

fn redirect_detail(to: &Url) -> String {
    format!("redirected to {} (a login page, or poormanci.jenkins.url is not Jenkins' own address)", http::shown_url(to))
}

/// The queue item a `Location: <jenkins>/queue/item/N/` names.
fn queue_item_of(location: &Url) -> Option<QueueItem> {
    let segments: Vec<&str> = location.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., "queue", "item", n] => Some(QueueItem { id: n.parse().ok()?, url: location.to_string() }),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RawQueueItem {
    #[serde(default)]
    why: Option<String>,
    #[serde(default)]
    cancelled: Option<bool>,
    #[serde(default)]
    executable: Option<RawExecutable>,
}

#[derive(Deserialize)]
struct RawExecutable {
    number: u64,
    url: String,
}

fn queue_state(raw: RawQueueItem) -> QueueState {
    match raw {
        RawQueueItem { executable: Some(e), .. } => QueueState::Started { number: e.number, url: e.url },
        RawQueueItem { cancelled: Some(true), .. } => QueueState::Cancelled,
        // Also a left item whose executor has not started yet.
        RawQueueItem { why, .. } => QueueState::Waiting { why },
    }
}

#[derive(Deserialize)]
struct RawBuild {
    number: u64,
    url: String,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    building: bool,
    #[serde(default, rename = "queueId")]
    queue_id: Option<u64>,
    /// Many entries are `{}`: actions the tree (or we) do not ask about.
    #[serde(default)]
    actions: Vec<Option<RawAction>>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(default)]
    causes: Option<Vec<RawCause>>,
    #[serde(default)]
    parameters: Option<Vec<RawParameter>>,
}

#[derive(Deserialize)]
struct RawCause {
    /// Only a remote cause (`Cause$RemoteCause`) has one.
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
struct RawParameter {
    #[serde(default)]
    name: Option<String>,
    /// A string mostly; a boolean for a boolean parameter, absent for files.
    #[serde(default)]
    value: Option<Value>,
}

fn build_info(raw: RawBuild) -> BuildInfo {
    let actions: Vec<RawAction> = raw.actions.into_iter().flatten().collect();
    let note = actions.iter().flat_map(|a| a.causes.iter().flatten()).find_map(|c| c.note.clone());
    let parameters = actions
        .iter()
        .flat_map(|a| a.parameters.iter().flatten())
        .filter_map(|p| {
            let value = match p.value.as_ref()? {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((p.name.clone()?, value))
        })
        .collect();
    BuildInfo {
        number: raw.number,
        url: raw.url,
        result: raw.result.as_deref().map(BuildResult::parse),
        building: raw.building,
        note,
        parameters,
        queue_id: raw.queue_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::http::test_server::{bind, response};

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    /// A config with this Jenkins; Secrets come only from the config parser.
    fn config(url: &Url, auth: bool) -> Config {
        let mut jenkins = serde_json::json!({"url": url.as_str(), "timeout": 5});
        if auth {
            jenkins["user"] = "ci".into();
            jenkins["api_token"] = "APITOKEN".into();
        }
        Config::from_value(&serde_json::json!({
            "poormanci.pagure": {"url": "https://pagure.example.org", "token": "x"},
            "poormanci.jenkins": jenkins,
            "poormanci.projects": {"pungi": [{"job": "pungi", "token": "JOBTOKEN"}]},
            "poormanci.state_dir": "/tmp",
        }))
        .unwrap()
    }

    fn jenkins(url: &Url, auth: bool) -> Jenkins {
        Jenkins::new(&config(url, auth).jenkins).unwrap()
    }

    fn job_token() -> Secret {
        config(&Url::parse("http://j/").unwrap(), false).projects["pungi"][0].token.clone()
    }

    const PARAMS: &[(&str, &str)] = &[("cause", "203"), ("REPO", "https://pagure.io/forks/a/pungi.git"), ("BRANCH", "fix")];

    #[test]
    fn job_paths_for_folders() {
        assert_eq!(job_path("pungi"), "/job/pungi");
        assert_eq!(job_path("folder/sub/my job"), "/job/folder/job/sub/job/my%20job");
        let j = jenkins(&Url::parse("https://jenkins.example.org/ci").unwrap(), false);
        assert_eq!(j.job_url("a/b"), "https://jenkins.example.org/ci/job/a/job/b/");
        assert_eq!(j.base().as_str(), "https://jenkins.example.org/ci");
    }

    #[test]
    fn queue_item_from_location() {
        let loc = Url::parse("http://jenkins.example.org/queue/item/39/").unwrap();
        assert_eq!(queue_item_of(&loc), Some(QueueItem { id: 39, url: loc.to_string() }));
        assert_eq!(queue_item_of(&Url::parse("http://j/job/pungi/").unwrap()), None);
        assert_eq!(queue_item_of(&Url::parse("http://j/queue/item/x/").unwrap()), None);
    }

    #[test]
    fn queue_states() {
        let left = parse(include_str!("../tests/fixtures/constructed.jenkins.queue_item.left.json"));
        assert_eq!(
            queue_state(left),
            QueueState::Started { number: 149, url: "http://jenkins.example.org/job/pungi/149/".into() }
        );
        let waiting = r#"{"_class": "hudson.model.Queue$WaitingItem", "actions": [{}], "blocked": false,
            "id": 40, "why": "In the quiet period. Expires in 4.9 sec", "timestamp": 1}"#;
        assert_eq!(queue_state(parse(waiting)), QueueState::Waiting { why: Some("In the quiet period. Expires in 4.9 sec".into()) });
        let cancelled = r#"{"_class": "hudson.model.Queue$LeftItem", "cancelled": true, "executable": null, "why": null}"#;
        assert_eq!(queue_state(parse(cancelled)), QueueState::Cancelled);
        let leaving = r#"{"_class": "hudson.model.Queue$LeftItem", "cancelled": false, "executable": null, "why": null}"#;
        assert_eq!(queue_state(parse(leaving)), QueueState::Waiting { why: None });
    }

    #[test]
    fn build_info_full_answer() {
        let b = build_info(parse(include_str!("../tests/fixtures/constructed.jenkins.build_info.json")));
        assert_eq!(
            b,
            BuildInfo {
                number: 149,
                url: "http://jenkins.example.org/job/pungi/149/".into(),
                result: Some(BuildResult::Success),
                building: false,
                note: Some("203".into()),
                parameters: vec![
                    ("REPO".into(), "https://pagure.io/forks/alice/pungi.git".into()),
                    ("BRANCH".into(), "fix-thing".into()),
                ],
                queue_id: None,
            }
        );
    }

    #[test]
    fn build_info_tree_answer_while_building() {
        let tree = r#"{"_class": "hudson.model.FreeStyleBuild", "actions": [
            {"_class": "hudson.model.CauseAction", "causes": [
                {"_class": "hudson.model.Cause$UserIdCause", "shortDescription": "Started by user ci"},
                {"_class": "hudson.model.Cause$RemoteCause", "shortDescription": "Started by remote host 10.0.0.5 with note: 7", "note": "7"}]},
            {}, null,
            {"_class": "hudson.model.ParametersAction", "parameters": [
                {"_class": "hudson.model.BooleanParameterValue", "name": "CLEAN", "value": true},
                {"_class": "hudson.model.FileParameterValue", "name": "PATCH"},
                {"_class": "hudson.model.StringParameterValue", "name": "BRANCH", "value": ""}]}],
            "building": true, "number": 5, "result": null, "url": "http://j/job/a/job/b/5/"}"#;
        let b = build_info(parse(tree));
        assert_eq!((b.number, b.building, b.result), (5, true, None));
        assert_eq!(b.note.as_deref(), Some("7"));
        assert_eq!(b.parameters, [("CLEAN".to_string(), "true".to_string()), ("BRANCH".into(), "".into())]);
    }

    #[test]
    fn build_results() {
        for s in ["SUCCESS", "UNSTABLE", "FAILURE", "ABORTED", "NOT_BUILT", "WEIRD"] {
            assert_eq!(BuildResult::parse(s).as_str(), s);
        }
        assert_eq!(BuildResult::parse("NOT_BUILT"), BuildResult::NotBuilt);
        assert_eq!(BuildResult::parse("WEIRD"), BuildResult::Other("WEIRD".into()));
    }

    #[tokio::test]
    async fn trigger_sends_token_in_body_with_crumb_and_cookie() {
        let server = bind().await;
        let base = server.url.clone();
        let item = format!("{base}queue/item/39/");
        let seen = server.answer(vec![
            response(
                "200 OK",
                &[("Content-Type", "application/json"), ("Set-Cookie", "JSESSIONID.1=s1; Path=/; HttpOnly")],
                r#"{"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": "c1", "crumbRequestField": "Jenkins-Crumb"}"#,
            ),
            response("201 Created", &[("Location", &item)], ""),
        ]);
        let j = jenkins(&base, true);
        let got = j.trigger("folder/my job", &job_token(), PARAMS).await.unwrap();
        assert_eq!(got, Some(QueueItem { id: 39, url: item.clone() }));

        let requests = seen.await.unwrap();
        assert!(requests[0].starts_with("GET /crumbIssuer/api/json HTTP/1.1\r\n"), "{}", requests[0]);
        let post = &requests[1];
        let (head, body) = post.split_once("\r\n\r\n").unwrap();
        let request_line = head.lines().next().unwrap();
        assert_eq!(request_line, "POST /job/folder/job/my%20job/buildWithParameters HTTP/1.1");
        assert_eq!(
            body,
            "token=JOBTOKEN&cause=203&REPO=https%3A%2F%2Fpagure.io%2Fforks%2Fa%2Fpungi.git&BRANCH=fix"
        );
        let head = head.to_lowercase();
        assert!(head.contains("\r\njenkins-crumb: c1\r\n"), "{head}");
        assert!(head.contains("\r\ncookie: jsessionid.1=s1\r\n"), "{head}");
        // ci:APITOKEN
        assert!(head.contains("\r\nauthorization: basic y2k6qvbjve9lru4=\r\n"), "{head}");
        assert!(!head.contains("jobtoken"), "{head}");
    }

    #[tokio::test]
    async fn stale_crumb_is_refreshed_once() {
        let server = bind().await;
        let base = server.url.clone();
        let crumb = |c: &str| {
            response("200 OK", &[], &format!(r#"{{"crumb": "{c}", "crumbRequestField": "Jenkins-Crumb"}}"#))
        };
        let no_crumb = response("403 No valid crumb was included in the request", &[], "<html>No valid crumb was included in the request</html>");
        let seen = server.answer(vec![
            crumb("c1"),
            no_crumb.clone(),
            crumb("c2"),
            response("303 See Other", &[("Location", &format!("{base}job/pungi/"))], ""),
            // A second trigger: the cached c2, and a second refusal is final.
            no_crumb.clone(),
            crumb("c3"),
            no_crumb,
        ]);
        let j = jenkins(&base, false);
        assert_eq!(j.trigger("pungi", &job_token(), PARAMS).await.unwrap(), None);
        let e = j.trigger("pungi", &job_token(), PARAMS).await.unwrap_err();
        assert_eq!(
            e,
            PeerError::Fatal(
                "POST /job/pungi/buildWithParameters: 403 Forbidden: Jenkins refused the CSRF crumb \
                 (crumbs are tied to the session; an API token needs none)"
                    .into()
            )
        );
        let requests = seen.await.unwrap();
        let crumbs: Vec<_> = requests
            .iter()
            .filter(|r| r.starts_with("POST"))
            .map(|r| r.lines().find(|l| l.to_lowercase().starts_with("jenkins-crumb:")).unwrap_or("").to_string())
            .collect();
        assert_eq!(crumbs.len(), 4);
        assert!(crumbs.iter().zip(["c1", "c2", "c2", "c3"]).all(|(h, c)| h.ends_with(c)), "{crumbs:?}");
    }

    #[tokio::test]
    async fn crumbs_off_and_errors() {
        let server = bind().await;
        let base = server.url.clone();
        let seen = server.answer(vec![
            response("404 Not Found", &[], ""),
            response("404 Not Found", &[], "<html>Not found</html>"),
            // Crumbs are off now: no second crumb request.
            response("403 Forbidden", &[], "<html>Access denied</html>"),
            response("503 Service Unavailable", &[("Retry-After", "10")], ""),
            response("302 Found", &[("Location", &format!("{base}login?from=%2Fjob"))], ""),
        ]);
        let j = jenkins(&base, false);
        let token = job_token();
        let e = j.trigger("nope", &token, PARAMS).await.unwrap_err();
        assert_eq!(e, PeerError::Fatal("POST /job/nope/buildWithParameters: 404 Not Found: no such job nope".into()));
        let e = j.trigger("pungi", &token, PARAMS).await.unwrap_err();
        assert_eq!(
            e.message(),
            "POST /job/pungi/buildWithParameters: 403 Forbidden: the job token is wrong, the user lacks Job/Build, \
             or a CSRF crumb is required"
        );
        let e = j.trigger("pungi", &token, PARAMS).await.unwrap_err();
        assert_eq!(e, PeerError::Retry("POST /job/pungi/buildWithParameters: 503 Service Unavailable (retry after 10 s)".into()));
        let e = j.trigger("pungi", &token, PARAMS).await.unwrap_err();
        assert!(!e.is_retry() && e.message().contains("302 Found: redirected to http://127.0.0.1:"), "{e}");
        assert!(!e.message().contains("from="), "{e}");
        let requests = seen.await.unwrap();
        assert_eq!(requests.iter().filter(|r| r.starts_with("GET /crumbIssuer")).count(), 1);
        assert!(requests.iter().all(|r| !r.lines().next().unwrap().contains("JOBTOKEN")));
    }

    #[tokio::test]
    async fn queue_build_cancel_stop_round_trips() {
        let server = bind().await;
        let base = server.url.clone();
        let build = include_str!("../tests/fixtures/constructed.jenkins.build_info.json");
        let seen = server.answer(vec![
            response("200 OK", &[], r#"{"_class": "hudson.model.Queue$BlockedItem", "why": "Waiting for next available executor"}"#),
            response("404 Not Found", &[], ""),
            response("200 OK", &[], build),
            response("404 Not Found", &[], ""),
            response("200 OK", &[], "<html>not JSON</html>"),
            response("404 Not Found", &[], ""), // crumb issuer
            response("204 No Content", &[], ""),
            response("404 Not Found", &[], ""),
            response("302 Found", &[("Location", &format!("{base}job/a/job/b/149/"))], ""),
            response("401 Unauthorized", &[], ""),
        ]);
        let j = jenkins(&base, true);
        let waiting = j.queue_item(41).await.unwrap();
        assert_eq!(waiting, QueueState::Waiting { why: Some("Waiting for next available executor".into()) });
        assert_eq!(j.queue_item(39).await.unwrap(), QueueState::Gone);
        assert_eq!(j.build("a/b", 149).await.unwrap().result, Some(BuildResult::Success));
        let e = j.build("a/b", 150).await.unwrap_err();
        assert_eq!(e, PeerError::Fatal("GET /job/a/job/b/150/api/json: 404 Not Found: no build 150 of job a/b".into()));
        let e = j.build("a/b", 151).await.unwrap_err();
        assert!(!e.is_retry() && e.message().contains("200 OK: the answer is not the documented JSON"), "{e}");
        j.cancel_queue_item(41).await.unwrap();
        j.cancel_queue_item(41).await.unwrap();
        j.stop_build("a/b", 149).await.unwrap();
        let e = j.stop_build("a/b", 149).await.unwrap_err();
        assert_eq!(e, PeerError::Fatal("POST /job/a/job/b/149/stop: 401 Unauthorized: user/api_token rejected".into()));

        let requests = seen.await.unwrap();
        let lines: Vec<&str> = requests.iter().map(|r| r.lines().next().unwrap()).collect();
        assert_eq!(lines[0], "GET /queue/item/41/api/json HTTP/1.1");
        assert_eq!(
            lines[2],
            "GET /job/a/job/b/149/api/json?tree=number%2Curl%2Cresult%2Cbuilding%2CqueueId%2Cactions%5Bcauses%5Bnote%2CshortDescription%5D%2Cparameters%5Bname%2Cvalue%5D%5D HTTP/1.1"
        );
        assert_eq!(lines[5], "GET /crumbIssuer/api/json HTTP/1.1");
        assert_eq!(lines[6], "POST /queue/cancelItem?id=41 HTTP/1.1");
        assert_eq!(lines[8], "POST /job/a/job/b/149/stop HTTP/1.1");
    }
}
