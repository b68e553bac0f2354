//! A thin client for the parts of Jenkins' remote API we use: trigger a
//! parameterized build, follow its queue item and build, list a job's
//! recent builds and the queue, cancel or stop a build.
//!
//! Jenkins' answers are read as Jenkins really gives them (its source:
//! `jenkins/model/ParameterizedJobMixIn.java`, `hudson/model/Queue.java`,
//! `hudson/model/Run.java`, `hudson/security/*`, and the build-token-root
//! plugin's `BuildRootAction.java`): refusals that no retry can fix become a
//! `Refusal` that names the cause and the fix.

use std::fmt;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use crate::config::{JenkinsConfig, Secret, TriggerRoute};
use crate::http::{self, Answer, PeerError};
use crate::policy::build_of_queue_item;

/// Jenkins' JSON answers are small with `tree=`; a full build answer with
/// change sets and test actions can be larger.
const JSON_CAP: usize = 4 * 1024 * 1024;

/// What we read of a build, alone or in a job's list.
const BUILD_FIELDS: &str = "number,queueId,url,building,result,timestamp,duration,estimatedDuration,\
                            actions[parameters[name,value],causes[note,shortDescription]]";

/// What we read of each item of the queue.
const QUEUE_TREE: &str = "items[id,task[name,url],why,cancelled,executable[number,url]]";

/// The crumb filter's refusal (`hudson/security/csrf/CrumbFilter.java`).
/// Only this text means a crumb refusal: every authenticated error page
/// carries `data-crumb-header` in its `<head>`.
const NO_VALID_CRUMB: &str = "No valid crumb was included in the request";

/// The parameters poormanci sends; `cause` and `token` are not parameters
/// (Jenkins reads them itself).
pub const REPO: &str = "REPO";
pub const BRANCH: &str = "BRANCH";
pub const BRANCH_TO: &str = "BRANCH_TO";
pub const COMMIT: &str = "COMMIT";
pub const NOT_PARAMETERS: &[&str] = &["cause", "token", "delay"];

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
    route: TriggerRoute,
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
    /// Jenkins merged the trigger into an identical item already waiting
    /// (303): other runs may share this item.
    pub merged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueState {
    Waiting { why: Option<String> },
    Started { number: u64, url: String },
    Cancelled,
    /// Jenkins forgets queue items about 5 minutes after they start, and
    /// at once on a restart: look for the build by its `queue_id`.
    Gone,
}

/// One item of `/queue/api/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedItem {
    pub id: u64,
    /// The job's short name (not its folder path) and its URL.
    pub job_name: Option<String>,
    pub job_url: Option<String>,
    pub state: QueueState,
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

/// A build parameter as Jenkins recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    /// A boolean shows as "true"/"false"; None for a file parameter.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub number: u64,
    pub url: String,
    /// The queue item the build came from (`Run.getQueueId`).
    pub queue_id: Option<u64>,
    /// Set while still building: post-build steps may still change it.
    pub result: Option<BuildResult>,
    pub building: bool,
    /// The `cause` given with the job token (a remote cause's note). A
    /// trigger by an API user without the token has a user cause, no note.
    pub note: Option<String>,
    /// Each cause's short description ("Started by remote host …").
    pub causes: Vec<String>,
    pub parameters: Vec<Parameter>,
    /// Milliseconds: start (epoch), run time (0 while building), and
    /// Jenkins' estimate from recent builds (None when it has none).
    pub timestamp_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub estimated_duration_ms: Option<u64>,
}

impl BuildInfo {
    /// The result, once it can no longer change: Jenkins sets `result`
    /// during the build and post-build steps may still make it worse;
    /// `building` turns false only after them (`Run.execute`).
    pub fn final_result(&self) -> Option<&BuildResult> {
        if self.building {
            None
        } else {
            self.result.as_ref()
        }
    }

    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|p| p.name == name)?.value.as_deref()
    }
}

/// Jenkins refused a request for a reason no retry can fix. Each says the
/// cause and, where there is one, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 409 "… is not buildable" (400 from buildByToken).
    Disabled { job: String },
    /// 400 "… is not parameterized" (500 with an IllegalStateException on
    /// Jenkins before 2.525; 400 "Use /buildByToken/build" from buildByToken).
    NotParameterized { job: String, says: String },
    /// 404 on `/job/…`.
    NoSuchJob { job: String },
    /// 404 from buildByToken: no such job, or one without a trigger token.
    NoJobWithToken { job: String },
    /// The job token does not match ("Invalid token provided.", or for
    /// anonymous the bare "Authentication required").
    WrongToken { job: String },
    /// Anonymous lacks Overall/Read: `/job/…` and `/crumbIssuer` are closed
    /// to it whatever the job token.
    AnonymousCannotRead,
    /// An authenticated user (or anonymous on a job without token) lacks a
    /// permission, e.g. Job/Build, Job/Cancel.
    LacksPermission { user: String, permission: String, job: Option<String> },
    /// "No valid crumb was included in the request", also with a fresh crumb.
    Crumb,
    /// A 403 not recognised: what Jenkins said.
    Forbidden { says: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Disabled { job } => {
                write!(f, "job {job} is disabled in Jenkins (\"not buildable\"): enable it, or take it out of poormanci.projects")
            }
            Refusal::NotParameterized { job, says } => write!(
                f,
                "job {job} has no parameters: {says}; define string parameters {REPO}, {BRANCH}, {BRANCH_TO} and {COMMIT} \
                 (contrib/jenkins/poormanci-job.yaml)"
            ),
            Refusal::NoSuchJob { job } => write!(
                f,
                "no job {job} in Jenkins: check its path in poormanci.projects (\"folder/job\" for a job in a folder); \
                 Jenkins also answers 404 for a job the user may not see (Job/Read)"
            ),
            Refusal::NoJobWithToken { job } => write!(
                f,
                "no job {job} in Jenkins with a trigger token: /buildByToken answers 404 for an unknown job and for a job \
                 without \"Trigger builds remotely\"; check the path and the job's token"
            ),
            Refusal::WrongToken { job } => write!(
                f,
                "Jenkins rejected the job token of {job}: copy the job's \"Trigger builds remotely\" token into poormanci.projects"
            ),
            Refusal::AnonymousCannotRead => write!(
                f,
                "anonymous has no Overall/Read on this Jenkins, so /job/… and /crumbIssuer refuse even the right job token: \
                 set poormanci.jenkins.trigger_route to \"buildByToken\" (build-token-root plugin) and give poormanci \
                 a read-only user (user, api_token) to follow builds"
            ),
            Refusal::LacksPermission { user, permission, job: Some(job) } if permission == "Job/Build" => write!(
                f,
                "{user} lacks Job/Build on {job}, and no job token was accepted instead: set the job's \
                 \"Trigger builds remotely\" token (the one in poormanci.projects), or grant Job/Build"
            ),
            Refusal::LacksPermission { user, permission, .. } => {
                write!(f, "{user} lacks the {permission} permission in Jenkins: grant it")
            }
            Refusal::Crumb => write!(
                f,
                "Jenkins refused the CSRF crumb (\"{NO_VALID_CRUMB}\") twice: crumbs are tied to the session; \
                 set user and api_token (API-token requests need no crumb) or trigger_route \"buildByToken\""
            ),
            Refusal::Forbidden { says } if says.is_empty() => write!(f, "forbidden"),
            Refusal::Forbidden { says } => write!(f, "forbidden: {says}"),
        }
    }
}

/// A trigger that did not queue a build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// Jenkins said no, for good: the run ends at once with this reason.
    #[error("{what}: {status}: {refusal}")]
    Refused { what: String, status: StatusCode, refusal: Refusal },
    #[error(transparent)]
    Peer(#[from] PeerError),
}

impl From<TriggerError> for PeerError {
    fn from(e: TriggerError) -> PeerError {
        match e {
            TriggerError::Refused { .. } => PeerError::Fatal(e.to_string()),
            TriggerError::Peer(e) => e,
        }
    }
}

/// What asking Jenkins to cancel a queue item did (`Queue.doCancelItem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// 500 "Could not cancel run": the item has left the queue (its build
    /// started, or it was cancelled already). Stop the build instead.
    LeftQueue,
    /// 404: Jenkins does not know the item (forgotten, or never visible).
    Unknown,
}

/// What taking a run's build back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// Taken out of the queue.
    Dequeued,
    /// Build `n` was asked to stop.
    Stopped(u64),
    /// Nothing left to take back (cancelled already, or never queued).
    Nothing,
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
                route: cfg.trigger_route,
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
    /// (older Jenkins sends the client back to the job's page).
    pub async fn trigger(&self, job: &str, token: &Secret, params: &[(&str, &str)]) -> Result<Option<QueueItem>, TriggerError> {
        let (url, with_crumb) = match self.inner.route {
            TriggerRoute::Job => (self.url(job_segments(job).chain(["buildWithParameters"])), true),
            TriggerRoute::BuildByToken => {
                // `job` is the job's full name, not a secret; the token stays in the body.
                let mut url = self.url(["buildByToken", "buildWithParameters"]);
                url.query_pairs_mut().append_pair("job", job);
                // Crumb-exempt (BuildRootActionCrumbExclusion), and
                // /crumbIssuer is closed to anonymous without Overall/Read.
                (url, false)
            }
        };
        let what = http::describe(&Method::POST, &url);
        let mut form = vec![("token", token.expose())];
        form.extend_from_slice(params);
        let a = self.post(&what, &url, &form, with_crumb).await?;
        // buildByToken sends a relative Location (`/queue/item/N/`).
        let location = a.location(&http::join(&self.inner.base, [""]));
        match a.status {
            // 201 names the new item; 200 from older Jenkins.
            s if s.is_success() => Ok(location.as_ref().and_then(|l| queue_item_of(l, false))),
            s if s.is_redirection() => match location {
                // 303: merged into an identical item still waiting.
                Some(loc) => match queue_item_of(&loc, s == StatusCode::SEE_OTHER) {
                    Some(item) => Ok(Some(item)),
                    // Back to the job's page: queued without an item to follow.
                    None if loc.path().starts_with(self.url(job_segments(job).chain([""])).path()) => Ok(None),
                    None => Err(http::status_error(&what, &a, &redirect_detail(&loc)).into()),
                },
                None => Ok(None),
            },
            status => match refusal(job, &a, true, self.inner.route) {
                Some(refusal) => Err(TriggerError::Refused { what, status, refusal }),
                // Jenkins 2.224 to 2.524 answer a parameterless job with a
                // bare 500 "Oops!" page (stack traces hidden): ask the job.
                None if status == StatusCode::INTERNAL_SERVER_ERROR && self.inner.route == TriggerRoute::Job => {
                    match self.job_parameters(job).await {
                        Ok(Some(defined)) if defined.is_empty() => {
                            let says = "Jenkins answers 500 and the job defines no parameters".into();
                            Err(TriggerError::Refused { what, status, refusal: Refusal::NotParameterized { job: job.into(), says } })
                        }
                        _ => Err(self.error(&what, &a, "").into()),
                    }
                }
                None => Err(self.error(&what, &a, "").into()),
            },
        }
    }

    /// The names of the parameters `job` defines (empty: not
    /// parameterized); None when the answer does not list the job's
    /// properties, so it says nothing either way.
    pub async fn job_parameters(&self, job: &str) -> Result<Option<Vec<String>>, PeerError> {
        let mut url = self.url(job_segments(job).chain(["api", "json"]));
        url.query_pairs_mut().append_pair("tree", "property[parameterDefinitions[name]]");
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        match a.status {
            s if s.is_success() => Ok(parameter_names(a.json(&what)?)),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &Refusal::NoSuchJob { job: job.into() }.to_string())),
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

    /// Every item waiting in the queue, in one request.
    pub async fn queue_items(&self) -> Result<Vec<QueuedItem>, PeerError> {
        let mut url = self.url(["queue", "api", "json"]);
        url.query_pairs_mut().append_pair("tree", QUEUE_TREE);
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        if !a.status.is_success() {
            return Err(self.error(&what, &a, ""));
        }
        let raw: RawQueue = a.json(&what)?;
        Ok(raw.items.into_iter().map(queued_item).collect())
    }

    pub async fn build(&self, job: &str, number: u64) -> Result<BuildInfo, PeerError> {
        let n = number.to_string();
        let mut url = self.url(job_segments(job).chain([n.as_str(), "api", "json"]));
        url.query_pairs_mut().append_pair("tree", BUILD_FIELDS);
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        match a.status {
            s if s.is_success() => Ok(build_info(a.json(&what)?)),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &format!("no build {number} of job {job}"))),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    /// The job's `n` most recent builds (newest first), in one request:
    /// how builds are followed per job, and found by `queue_id` once
    /// Jenkins has forgotten their queue item.
    pub async fn job_builds(&self, job: &str, n: u32) -> Result<Vec<BuildInfo>, PeerError> {
        let mut url = self.url(job_segments(job).chain(["api", "json"]));
        url.query_pairs_mut().append_pair("tree", &format!("builds[{BUILD_FIELDS}]{{0,{n}}}"));
        let what = http::describe(&Method::GET, &url);
        let a = http::send("jenkins", &what, self.request(Method::GET, url), JSON_CAP).await?;
        match a.status {
            s if s.is_success() => Ok(a.json::<RawJob>(&what)?.builds.into_iter().map(build_info).collect()),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &Refusal::NoSuchJob { job: job.into() }.to_string())),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    /// Take a build out of the queue.
    pub async fn cancel_queue_item(&self, id: u64) -> Result<CancelOutcome, PeerError> {
        let mut url = self.url(["queue", "cancelItem"]);
        url.query_pairs_mut().append_pair("id", &id.to_string());
        let what = http::describe(&Method::POST, &url);
        let a = self.post(&what, &url, &[], true).await?;
        match a.status {
            // 204 in recent Jenkins, a 302 to the queue in older ones.
            s if s.is_success() || s.is_redirection() => Ok(CancelOutcome::Cancelled),
            StatusCode::NOT_FOUND => Ok(CancelOutcome::Unknown),
            StatusCode::INTERNAL_SERVER_ERROR if a.mentions("Could not cancel run") => Ok(CancelOutcome::LeftQueue),
            StatusCode::UNPROCESSABLE_ENTITY => Err(http::status_error(
                &what,
                &a,
                &format!("the Jenkins user lacks Job/Cancel ({})", jenkins_says(&a).unwrap_or_default()),
            )),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    /// Abort a running build.
    pub async fn stop_build(&self, job: &str, number: u64) -> Result<(), PeerError> {
        let n = number.to_string();
        let url = self.url(job_segments(job).chain([n.as_str(), "stop"]));
        let what = http::describe(&Method::POST, &url);
        let a = self.post(&what, &url, &[], true).await?;
        match a.status {
            s if s.is_success() || s.is_redirection() => Ok(()),
            StatusCode::NOT_FOUND => Err(http::status_error(&what, &a, &format!("no build {number} of job {job}"))),
            _ => Err(self.error(&what, &a, "")),
        }
    }

    /// Take a run's build back: out of the queue while it waits, stopped
    /// once it runs, found by its queue item's id when Jenkins has
    /// forgotten the item.
    pub async fn withdraw(&self, job: &str, build: Option<u64>, queue_id: Option<u64>) -> Result<Withdrawn, PeerError> {
        let q = match (build, queue_id) {
            (Some(n), _) => return self.stop_build(job, n).await.map(|_| Withdrawn::Stopped(n)),
            (None, Some(q)) => q,
            (None, None) => return Ok(Withdrawn::Nothing),
        };
        // Twice at most: an item that starts between our look and the
        // cancel answers 500, and is then looked at again.
        for _ in 0..2 {
            let number = match self.queue_item(q).await? {
                QueueState::Waiting { .. } => match self.cancel_queue_item(q).await? {
                    CancelOutcome::Cancelled => return Ok(Withdrawn::Dequeued),
                    CancelOutcome::LeftQueue | CancelOutcome::Unknown => continue,
                },
                QueueState::Started { number, .. } => number,
                QueueState::Cancelled => return Ok(Withdrawn::Nothing),
                QueueState::Gone => match build_of_queue_item(&self.job_builds(job, 50).await?, q) {
                    Some(b) if b.building => b.number,
                    _ => return Ok(Withdrawn::Nothing),
                },
            };
            return self.stop_build(job, number).await.map(|_| Withdrawn::Stopped(number));
        }
        Err(PeerError::Retry(format!("queue item {q} is leaving the queue; trying again")))
    }

    /// POST a form, with the CSRF crumb when `with_crumb`; when Jenkins
    /// says the crumb is not valid (the session expired), fetch a fresh one
    /// and try once more.
    async fn post(&self, what: &str, url: &Url, form: &[(&str, &str)], with_crumb: bool) -> Result<Answer, PeerError> {
        let mut refreshed = false;
        loop {
            let mut req = self.request(Method::POST, url.clone()).form(form);
            if with_crumb {
                if let Some((name, value)) = self.crumb(refreshed).await? {
                    req = req.header(name, value);
                }
            }
            let a = http::send("jenkins", what, req, JSON_CAP).await?;
            if with_crumb && !refreshed && is_crumb_refusal(&a) {
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
    fn error(&self, what: &str, a: &Answer, context: &str) -> PeerError {
        let says = || jenkins_says(a).map(|s| format!("Jenkins says \"{s}\"")).unwrap_or_default();
        let detail = match a.status {
            StatusCode::UNAUTHORIZED if self.inner.auth.is_some() => "user/api_token rejected".to_string(),
            StatusCode::UNAUTHORIZED => "Jenkins wants a login: set poormanci.jenkins user and api_token".to_string(),
            StatusCode::FORBIDDEN => forbidden(a, None, false).to_string(),
            s if s.is_redirection() => a.location(&self.inner.base).map(|l| redirect_detail(&l)).unwrap_or_default(),
            _ => says(),
        };
        let detail = match (context.is_empty(), detail.is_empty()) {
            (true, _) => detail,
            (false, true) => context.to_string(),
            (false, false) => format!("{context}: {detail}"),
        };
        http::status_error(what, a, &detail)
    }
}

fn redirect_detail(to: &Url) -> String {
    format!("redirected to {} (a login page, or poormanci.jenkins.url is not Jenkins' own address)", http::shown_url(to))
}

fn is_crumb_refusal(a: &Answer) -> bool {
    a.status == StatusCode::FORBIDDEN && String::from_utf8_lossy(&a.body).contains(NO_VALID_CRUMB)
}

/// Why Jenkins refused a trigger of `job`, when no retry can help; None
/// for answers that may be different later (a 5xx) or are not a refusal.
pub fn refusal(job: &str, a: &Answer, sent_token: bool, route: TriggerRoute) -> Option<Refusal> {
    let job = job.to_string();
    let body = String::from_utf8_lossy(&a.body);
    let says = || jenkins_says(a).map(|s| format!("Jenkins says \"{s}\"")).unwrap_or_else(|| "Jenkins refused".into());
    match a.status {
        StatusCode::CONFLICT => Some(Refusal::Disabled { job }),
        // buildByToken answers 400 for both; /job/… only for no parameters.
        StatusCode::BAD_REQUEST if body.contains("is not buildable") => Some(Refusal::Disabled { job }),
        StatusCode::BAD_REQUEST if body.contains("is not parameterized") || body.contains("takes no parameters") => {
            Some(Refusal::NotParameterized { job, says: says() })
        }
        // Jenkins before 2.525: `throw new IllegalStateException("This build is not parameterized!")`.
        StatusCode::INTERNAL_SERVER_ERROR if body.contains("IllegalStateException") && body.contains("not parameterized") => {
            Some(Refusal::NotParameterized { job, says: says() })
        }
        StatusCode::NOT_FOUND => Some(match route {
            TriggerRoute::Job => Refusal::NoSuchJob { job },
            TriggerRoute::BuildByToken => Refusal::NoJobWithToken { job },
        }),
        StatusCode::FORBIDDEN => Some(forbidden(a, Some(&job), sent_token)),
        _ => None,
    }
}

/// Read a 403 page. Jenkins renders three kinds: the crumb filter's
/// (Jetty's error page, "No valid crumb…"), the anonymous one
/// ("Authentication required", `HudsonAuthenticationEntryPoint`, with
/// the missing permission when one is known) and the authenticated one
/// (a full layout page, `accessDenied.jelly`, whose `<head>` carries
/// `data-crumb-header` whatever the cause). A missing permission also comes
/// as `X-Required-Permission` (`AccessDeniedException3.reportAsHeaders`).
fn forbidden(a: &Answer, job: Option<&str>, sent_token: bool) -> Refusal {
    let body = String::from_utf8_lossy(&a.body);
    if body.contains(NO_VALID_CRUMB) {
        return Refusal::Crumb;
    }
    // `BuildAuthorizationToken.checkPermission`, seen by an authenticated user.
    if body.contains("Invalid token provided") {
        return Refusal::WrongToken { job: job.unwrap_or("the job").into() };
    }
    let anonymous_page = body.contains("Authentication required");
    let user = a.header("X-You-Are-Authenticated-As").map(str::to_string);
    let permission = a
        .header("X-Required-Permission")
        .map(permission_title)
        .or_else(|| missing_permission_in(&body))
        .or_else(|| body.split("Permission you need to have (but didn't): ").nth(1).map(|rest| {
            permission_title(rest.split_whitespace().next().unwrap_or_default())
        }));
    let anonymous = anonymous_page || user.as_deref() == Some("anonymous");
    match permission {
        Some(p) if anonymous && p == "Overall/Read" => Refusal::AnonymousCannotRead,
        Some(permission) => Refusal::LacksPermission {
            user: if anonymous { "anonymous".into() } else { format!("the Jenkins user {}", user.as_deref().unwrap_or("?")) },
            permission,
            job: job.map(str::to_string),
        },
        // The entry point shows no reason for a plain AccessDeniedException,
        // which is what a wrong job token throws.
        None if anonymous_page && sent_token => Refusal::WrongToken { job: job.unwrap_or("the job").into() },
        None if anonymous_page => Refusal::AnonymousCannotRead,
        None => Refusal::Forbidden { says: jenkins_says(a).unwrap_or_default() },
    }
}

/// "hudson.model.Item.Build" → "Job/Build", as Jenkins' UI names them.
fn permission_title(id: &str) -> String {
    let (group, name) = id.rsplit_once('.').unwrap_or(("", id));
    let group = match group {
        "hudson.model.Hudson" => "Overall",
        "hudson.model.Item" => "Job",
        "hudson.model.Run" => "Run",
        "hudson.model.Computer" => "Agent",
        "hudson.model.View" => "View",
        _ => return id.to_string(),
    };
    format!("{group}/{name}")
}

/// "ci is missing the Job/Build permission" (`AccessDeniedException2.MissingPermission`).
fn missing_permission_in(body: &str) -> Option<String> {
    let rest = body.split(" is missing the ").nth(1)?;
    let permission = rest.split(" permission").next()?;
    let plain = !permission.is_empty() && permission.len() < 80 && !permission.contains(|c: char| c == '<' || c.is_control());
    plain.then(|| permission.to_string())
}

/// The one line an error page says: Jetty's `MESSAGE:` row or `<title>`,
/// the access-denied page's `<p class="error">`, or the first line of a
/// plain-text stack trace (`java.io.IOException: … is not buildable`).
fn jenkins_says(a: &Answer) -> Option<String> {
    let body = String::from_utf8_lossy(&a.body);
    let between = |start: &str, end: &str| -> Option<String> {
        let rest = &body[body.find(start)? + start.len()..];
        Some(rest[..rest.find(end)?].to_string())
    };
    // `java.lang.IllegalStateException: This build is not parameterized!`
    let exception = || {
        let at = body.find("Exception: ")? + "Exception: ".len();
        let rest = &body[at..];
        Some(rest[..rest.find(['\n', '<']).unwrap_or(rest.len())].to_string())
    };
    let text = between("<th>MESSAGE:</th><td>", "</td>")
        .or_else(exception)
        .or_else(|| between("<p class=\"error\">", "</p>"))
        .or_else(|| {
            // Jetty's "Error 409 pungi-pr is not buildable"; a layout
            // page's title ("Jenkins") says nothing.
            let title = between("<title>", "</title>")?;
            match title.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["Error", code, rest @ ..] if code.parse::<u16>().is_ok() => Some(rest.join(" ")),
                _ => None,
            }
        })?;
    let text = text
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let text = http::detail(&text);
    (!text.is_empty()).then_some(text)
}

/// The queue item a `Location: <jenkins>/queue/item/N/` names.
fn queue_item_of(location: &Url, merged: bool) -> Option<QueueItem> {
    let segments: Vec<&str> = location.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., "queue", "item", n] => Some(QueueItem { id: n.parse().ok()?, url: location.to_string(), merged }),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RawQueue {
    #[serde(default)]
    items: Vec<RawQueueItem>,
}

#[derive(Deserialize)]
struct RawQueueItem {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    task: Option<RawTask>,
    #[serde(default)]
    why: Option<String>,
    #[serde(default)]
    cancelled: Option<bool>,
    #[serde(default)]
    executable: Option<RawExecutable>,
}

#[derive(Deserialize)]
struct RawTask {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
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

fn queued_item(mut raw: RawQueueItem) -> QueuedItem {
    let task = raw.task.take();
    QueuedItem {
        id: raw.id.unwrap_or_default(),
        job_name: task.as_ref().and_then(|t| t.name.clone()),
        job_url: task.and_then(|t| t.url),
        state: queue_state(raw),
    }
}

#[derive(Deserialize)]
struct RawJobProperties {
    /// One entry per job property; only ParametersDefinitionProperty has definitions.
    #[serde(default)]
    property: Option<Vec<Option<RawProperty>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProperty {
    #[serde(default)]
    parameter_definitions: Option<Vec<RawParameter>>,
}

fn parameter_names(raw: RawJobProperties) -> Option<Vec<String>> {
    let names = raw.property?
        .into_iter()
        .flatten()
        .flat_map(|p| p.parameter_definitions.into_iter().flatten())
        .filter_map(|d| d.name)
        .collect();
    Some(names)
}

#[derive(Deserialize)]
struct RawJob {
    /// Absent for a folder, or when the tree matched nothing.
    #[serde(default)]
    builds: Vec<RawBuild>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBuild {
    number: u64,
    url: String,
    /// -1 when unknown (`Run.QUEUE_ID_UNKNOWN`).
    #[serde(default)]
    queue_id: Option<i64>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    building: bool,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    duration: Option<i64>,
    /// -1 when Jenkins has no estimate.
    #[serde(default)]
    estimated_duration: Option<i64>,
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
#[serde(rename_all = "camelCase")]
struct RawCause {
    /// Only a remote cause (`Cause$RemoteCause`) has one.
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    short_description: Option<String>,
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
    let causes = || actions.iter().flat_map(|a| a.causes.iter().flatten());
    let note = causes().find_map(|c| c.note.clone());
    let parameters = actions
        .iter()
        .flat_map(|a| a.parameters.iter().flatten())
        .filter_map(|p| {
            let value = match p.value.as_ref() {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            Some(Parameter { name: p.name.clone()?, value })
        })
        .collect();
    let positive = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    BuildInfo {
        number: raw.number,
        url: raw.url,
        queue_id: positive(raw.queue_id),
        result: raw.result.as_deref().map(BuildResult::parse),
        building: raw.building,
        note,
        causes: causes().filter_map(|c| c.short_description.clone()).collect(),
        parameters,
        timestamp_ms: positive(raw.timestamp),
        duration_ms: positive(raw.duration),
        estimated_duration_ms: positive(raw.estimated_duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::http::test_server::{bind, response};
    use reqwest::header::HeaderMap;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    /// A config with this Jenkins; Secrets come only from the config parser.
    fn config_with(url: &Url, auth: bool, route: &str) -> Config {
        let mut jenkins = serde_json::json!({"url": url.as_str(), "timeout": 5, "trigger_route": route});
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
        Jenkins::new(&config_with(url, auth, "job").jenkins).unwrap()
    }

    fn by_token(url: &Url) -> Jenkins {
        Jenkins::new(&config_with(url, false, "buildByToken").jenkins).unwrap()
    }

    fn job_token() -> Secret {
        config_with(&Url::parse("http://j/").unwrap(), false, "job").projects["pungi"][0].token.clone()
    }

    const PARAMS: &[(&str, &str)] = &[("cause", "203"), ("REPO", "https://pagure.io/forks/a/pungi.git"), ("BRANCH", "fix")];

    /// Jetty's error page, which Jenkins' `sendError` answers render as.
    fn jetty(status: u16, message: &str, uri: &str) -> String {
        format!(
            "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n\
             <title>Error {status} {message}</title>\n</head>\n<body><h2>HTTP ERROR {status} {message}</h2>\n<table>\n\
             <tr><th>URI:</th><td>{uri}</td></tr>\n<tr><th>STATUS:</th><td>{status}</td></tr>\n\
             <tr><th>MESSAGE:</th><td>{message}</td></tr>\n<tr><th>SERVLET:</th><td>Stapler</td></tr>\n</table>\n\
             <hr/><a href=\"https://eclipse.org/jetty\">Powered by Jetty:// 10.0.20</a><hr/>\n</body>\n</html>\n"
        )
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Answer { status: StatusCode::from_u16(status).unwrap(), headers: map, body: body.into() }
    }

    const AUTHENTICATED_403: &str = include_str!("../tests/fixtures/constructed.jenkins.403.authenticated.html");
    const ANONYMOUS_403: &str = include_str!("../tests/fixtures/constructed.jenkins.403.anonymous.html");

    /// `AccessDeniedException3.reportAsHeaders` for user `who` lacking `permission`.
    fn denied_headers<'a>(who: &'a str, permission: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("X-You-Are-Authenticated-As", who),
            ("X-You-Are-In-Group-Disabled", "JENKINS-39402: use -Dhudson.security.AccessDeniedException2.REPORT_GROUP_HEADERS=true or use /whoAmI to diagnose"),
            ("X-Required-Permission", permission),
            ("X-Permission-Implied-By", "hudson.model.Hudson.Administer"),
        ]
    }

    fn refused(job: &str, a: &Answer) -> Option<Refusal> {
        refusal(job, a, true, TriggerRoute::Job)
    }

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
        assert_eq!(queue_item_of(&loc, false), Some(QueueItem { id: 39, url: loc.to_string(), merged: false }));
        assert_eq!(queue_item_of(&Url::parse("http://j/job/pungi/").unwrap(), false), None);
        assert_eq!(queue_item_of(&Url::parse("http://j/queue/item/x/").unwrap(), false), None);
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
    fn queue_listing() {
        let raw: RawQueue = parse(include_str!("../tests/fixtures/constructed.jenkins.queue.json"));
        let items: Vec<QueuedItem> = raw.items.into_iter().map(queued_item).collect();
        let ids: Vec<u64> = items.iter().map(|i| i.id).collect();
        assert_eq!(ids, [912, 910, 908]);
        assert_eq!(
            items[1],
            QueuedItem {
                id: 910,
                job_name: Some("python-foo".into()),
                job_url: Some("https://jenkins.example.org/job/rpms/job/python-foo/".into()),
                state: QueueState::Waiting { why: Some("Waiting for next available executor".into()) },
            }
        );
        // An empty queue is `{"_class": "hudson.model.Queue", "items": []}`.
        assert!(parse::<RawQueue>(r#"{"_class": "hudson.model.Queue", "items": []}"#).items.is_empty());
    }

    #[test]
    fn build_info_full_answer() {
        let b = build_info(parse(include_str!("../tests/fixtures/constructed.jenkins.build_info.json")));
        assert_eq!(
            b,
            BuildInfo {
                number: 149,
                url: "http://jenkins.example.org/job/pungi/149/".into(),
                queue_id: None,
                result: Some(BuildResult::Success),
                building: false,
                note: Some("203".into()),
                causes: vec!["Started by remote host 10.0.0.5 with note: 203".into()],
                parameters: vec![
                    Parameter { name: "REPO".into(), value: Some("https://pagure.io/forks/alice/pungi.git".into()) },
                    Parameter { name: "BRANCH".into(), value: Some("fix-thing".into()) },
                ],
                timestamp_ms: Some(1324317717000),
                duration_ms: Some(8826),
                estimated_duration_ms: None,
            }
        );
        assert_eq!(b.final_result(), Some(&BuildResult::Success));
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
            "building": true, "number": 5, "queueId": 77, "result": null, "url": "http://j/job/a/job/b/5/"}"#;
        let b = build_info(parse(tree));
        assert_eq!((b.number, b.building, b.result.clone(), b.queue_id), (5, true, None, Some(77)));
        assert_eq!(b.note.as_deref(), Some("7"));
        assert_eq!(b.causes, ["Started by user ci", "Started by remote host 10.0.0.5 with note: 7"]);
        assert_eq!(
            b.parameters,
            [
                Parameter { name: "CLEAN".into(), value: Some("true".into()) },
                Parameter { name: "PATCH".into(), value: None },
                Parameter { name: "BRANCH".into(), value: Some("".into()) },
            ]
        );
        assert_eq!(b.parameter("CLEAN"), Some("true"));
        assert_eq!(b.parameter("PATCH"), None);
    }

    #[test]
    fn job_builds_answer() {
        let raw: RawJob = parse(include_str!("../tests/fixtures/constructed.jenkins.job_builds.json"));
        let builds: Vec<BuildInfo> = raw.builds.into_iter().map(build_info).collect();
        let numbers: Vec<(u64, Option<u64>)> = builds.iter().map(|b| (b.number, b.queue_id)).collect();
        assert_eq!(numbers, [(151, Some(907)), (150, Some(903)), (149, Some(899)), (148, None)]);

        // Result set, post-build steps still running: not final.
        let running = build_of_queue_item(&builds, 907).unwrap();
        assert_eq!((running.result.as_ref(), running.building), (Some(&BuildResult::Success), true));
        assert_eq!(running.final_result(), None);
        assert_eq!(running.note.as_deref(), Some("https://pagure.io/pungi/pull-request/235 [poormanci run 12]"));
        assert_eq!(running.parameter(COMMIT), Some("3f2a9c1e5b7d4e6f8a9b0c1d2e3f4a5b6c7d8e9f"));
        assert_eq!((running.duration_ms, running.estimated_duration_ms, running.timestamp_ms), (Some(0), Some(412305), Some(1764495012345)));

        // Triggered by an API user without the token: a user cause, no note.
        let by_user = build_of_queue_item(&builds, 903).unwrap();
        assert_eq!((by_user.number, by_user.note.as_deref()), (150, None));
        assert_eq!(by_user.causes, ["Started by user ci"]);
        assert_eq!(by_user.final_result(), Some(&BuildResult::Failure));

        assert_eq!(builds[2].estimated_duration_ms, None);
        assert!(builds[3].parameters.is_empty());
        assert_eq!(build_of_queue_item(&builds, 1), None);
        // A job with no builds yet.
        assert!(parse::<RawJob>(r#"{"_class": "hudson.model.FreeStyleProject", "builds": []}"#).builds.is_empty());
    }

    #[test]
    fn final_only_when_not_building() {
        let mut b = build_info(parse(r#"{"number": 1, "url": "u", "building": true, "result": "SUCCESS"}"#));
        assert_eq!(b.final_result(), None);
        b.result = Some(BuildResult::Unstable);
        b.building = false;
        assert_eq!(b.final_result(), Some(&BuildResult::Unstable));
        // Over, but no result recorded (yet): nothing to report.
        b.result = None;
        assert_eq!(b.final_result(), None);
    }

    #[test]
    fn build_results() {
        for s in ["SUCCESS", "UNSTABLE", "FAILURE", "ABORTED", "NOT_BUILT", "WEIRD"] {
            assert_eq!(BuildResult::parse(s).as_str(), s);
        }
        assert_eq!(BuildResult::parse("NOT_BUILT"), BuildResult::NotBuilt);
        assert_eq!(BuildResult::parse("WEIRD"), BuildResult::Other("WEIRD".into()));
    }

    #[test]
    fn refusals_no_retry_can_fix() {
        // ParameterizedJobMixIn since 2.525: errorWithoutStack → Jetty's page.
        let disabled = answer(409, &[], &jetty(409, "pungi-pr is not buildable", "/job/pungi-pr/buildWithParameters"));
        assert_eq!(refused("pungi-pr", &disabled), Some(Refusal::Disabled { job: "pungi-pr".into() }));
        // Before: HttpResponses.error(409, IOException) prints the stack trace.
        let old = answer(409, &[], "java.io.IOException: pungi-pr is not buildable!\n\tat jenkins.model.ParameterizedJobMixIn.doBuildWithParameters(ParameterizedJobMixIn.java:241)\n");
        assert_eq!(refused("pungi-pr", &old), Some(Refusal::Disabled { job: "pungi-pr".into() }));

        let plain = answer(400, &[], &jetty(400, "pungi-pr is not parameterized", "/job/pungi-pr/buildWithParameters"));
        let says = |s: &str| Refusal::NotParameterized { job: "pungi-pr".into(), says: s.into() };
        assert_eq!(refused("pungi-pr", &plain), Some(says("Jenkins says \"pungi-pr is not parameterized\"")));
        let old = answer(500, &[], "<!DOCTYPE html><html><head data-crumb-header=\"Jenkins-Crumb\"><title>Jenkins</title></head><body><h1>Oops!</h1>\
            <pre style=\"margin:2em; clear:both\">java.lang.IllegalStateException: This build is not parameterized!\n\
            \tat jenkins.model.ParameterizedJobMixIn.doBuildWithParameters(ParameterizedJobMixIn.java:245)\n</pre></body></html>");
        assert_eq!(refused("pungi-pr", &old), Some(says("Jenkins says \"This build is not parameterized!\"")));

        assert_eq!(refused("a/b", &answer(404, &[], &jetty(404, "Not Found", "/job/a/job/b/buildWithParameters"))), Some(Refusal::NoSuchJob { job: "a/b".into() }));

        // Worth retrying: any other 5xx, 429, a 500 that is not the parameterless one.
        for a in [answer(500, &[], "<h1>Oops!</h1><p>Logging ID=1f2e</p>"), answer(503, &[], ""), answer(502, &[], ""), answer(429, &[], "")] {
            assert_eq!(refused("pungi-pr", &a), None, "{}", a.status);
        }

        let text = |r: Refusal| r.to_string();
        assert!(text(Refusal::Disabled { job: "pungi-pr".into() }).starts_with("job pungi-pr is disabled in Jenkins"));
        assert!(text(says("x")).starts_with("job pungi-pr has no parameters: x;"));
        assert!(text(Refusal::NoSuchJob { job: "pungi-pr".into() }).starts_with("no job pungi-pr in Jenkins"));
    }

    #[test]
    fn build_by_token_refusals() {
        // BuildRootAction: 400 for disabled or parameterless, 404 for unknown or tokenless.
        let route = TriggerRoute::BuildByToken;
        let disabled = answer(400, &[], "java.io.IOException: folder/pungi-pr is not buildable\n\tat org.jenkinsci.plugins.build_token_root.BuildRootAction.project(BuildRootAction.java:160)\n");
        assert_eq!(refusal("folder/pungi-pr", &disabled, true, route), Some(Refusal::Disabled { job: "folder/pungi-pr".into() }));
        let plain = answer(400, &[], &jetty(400, "Use /buildByToken/build for this job since it takes no parameters", "/buildByToken/buildWithParameters"));
        assert!(matches!(refusal("p", &plain, true, route), Some(Refusal::NotParameterized { says, .. }) if says.contains("takes no parameters")));
        let unknown = answer(404, &[], &jetty(404, "Not Found", "/buildByToken/buildWithParameters"));
        assert_eq!(refusal("p", &unknown, true, route), Some(Refusal::NoJobWithToken { job: "p".into() }));
        assert!(Refusal::NoJobWithToken { job: "p".into() }.to_string().starts_with("no job p in Jenkins with a trigger token"));
    }

    #[test]
    fn forbidden_pages_read_right() {
        // The authenticated page mentions the crumb in its head: not a crumb refusal.
        assert!(AUTHENTICATED_403.contains("data-crumb-header"));
        let lacks_build = answer(403, &denied_headers("ci", "hudson.model.Item.Build"), AUTHENTICATED_403);
        let r = refused("pungi-pr", &lacks_build).unwrap();
        assert_eq!(
            r,
            Refusal::LacksPermission { user: "the Jenkins user ci".into(), permission: "Job/Build".into(), job: Some("pungi-pr".into()) }
        );
        assert!(r.to_string().starts_with("the Jenkins user ci lacks Job/Build on pungi-pr"), "{r}");
        // The same, read from the page alone (a proxy dropped the X- headers).
        assert!(matches!(refused("pungi-pr", &answer(403, &[], AUTHENTICATED_403)),
            Some(Refusal::LacksPermission { permission, .. }) if permission == "Job/Build"));

        // The authenticated page for a wrong token.
        let wrong = AUTHENTICATED_403.replace("ci is missing the Job/Build permission", "Invalid token provided.");
        assert_eq!(refused("pungi-pr", &answer(403, &[], &wrong)), Some(Refusal::WrongToken { job: "pungi-pr".into() }));

        // Anonymous without Overall/Read: the right token does not help on /job/….
        let anon = answer(403, &denied_headers("anonymous", "hudson.model.Hudson.Read"), ANONYMOUS_403);
        assert_eq!(refused("pungi-pr", &anon), Some(Refusal::AnonymousCannotRead));
        assert_eq!(refused("pungi-pr", &answer(403, &[], ANONYMOUS_403)), Some(Refusal::AnonymousCannotRead));
        assert!(Refusal::AnonymousCannotRead.to_string().contains("trigger_route to \"buildByToken\""));

        // Anonymous with Overall/Read and a wrong token: the bare entry-point page.
        let bare = ANONYMOUS_403.split("<!--").next().unwrap().to_string() + "<!--\n-->\n\n</body></html>";
        assert_eq!(refused("pungi-pr", &answer(403, &[], &bare)), Some(Refusal::WrongToken { job: "pungi-pr".into() }));
        // ... and for a GET, which sends no token: a login is wanted.
        assert_eq!(forbidden(&answer(403, &[], &bare), None, false), Refusal::AnonymousCannotRead);

        // The crumb filter's refusal.
        let crumb = answer(403, &[], &jetty(403, NO_VALID_CRUMB, "/job/pungi-pr/buildWithParameters"));
        assert!(is_crumb_refusal(&crumb));
        assert!(!is_crumb_refusal(&lacks_build) && !is_crumb_refusal(&anon));
        assert_eq!(refused("pungi-pr", &crumb), Some(Refusal::Crumb));

        // A user lacking Job/Cancel, on a stop.
        let cancel = answer(403, &denied_headers("ci", "hudson.model.Item.Cancel"), &AUTHENTICATED_403.replace("Job/Build", "Job/Cancel"));
        assert_eq!(forbidden(&cancel, None, false).to_string(), "the Jenkins user ci lacks the Job/Cancel permission in Jenkins: grant it");

        // Anything else: what Jenkins said.
        let other = answer(403, &[], &jetty(403, "Forbidden", "/buildByToken/buildWithParameters"));
        assert_eq!(refused("p", &other), Some(Refusal::Forbidden { says: "Forbidden".into() }));
    }

    #[test]
    fn what_jenkins_says() {
        assert_eq!(jenkins_says(&answer(409, &[], &jetty(409, "a &amp; b is not buildable", "/x"))).as_deref(), Some("a & b is not buildable"));
        assert_eq!(jenkins_says(&answer(403, &[], AUTHENTICATED_403)).as_deref(), Some("ci is missing the Job/Build permission"));
        assert_eq!(jenkins_says(&answer(500, &[], "<title>Error 500 Server Error</title>")).as_deref(), Some("Server Error"));
        assert_eq!(jenkins_says(&answer(502, &[], "")), None);
        assert_eq!(jenkins_says(&answer(500, &[], "<title>Jenkins</title><h1>Oops!</h1>")), None);
        assert_eq!(permission_title("hudson.model.Hudson.Read"), "Overall/Read");
        assert_eq!(permission_title("hudson.model.Item.Cancel"), "Job/Cancel");
        assert_eq!(permission_title("com.example.Weird"), "com.example.Weird");
        assert_eq!(missing_permission_in("<p class=\"error\">ci is missing the Job/Build permission</p>").as_deref(), Some("Job/Build"));
        assert_eq!(missing_permission_in("x is missing the a\nb permission"), None);
    }

    /// Error pages are peer-supplied text: reading any of them, however
    /// cut or mixed, neither panics nor yields a message of several lines.
    mod pages {
        use super::*;
        use proptest::prelude::*;

        fn fragment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("<th>MESSAGE:</th><td>".to_string()),
                Just("</td>".to_string()),
                Just("java.lang.IllegalStateException: ".to_string()),
                Just("<p class=\"error\">".to_string()),
                Just("</p>".to_string()),
                Just("<title>Error 4".to_string()),
                Just("</title>".to_string()),
                Just(" is missing the ".to_string()),
                Just(" permission".to_string()),
                Just("Authentication required".to_string()),
                Just("Permission you need to have (but didn't): ".to_string()),
                Just("Invalid token provided".to_string()),
                Just(NO_VALID_CRUMB.to_string()),
                Just("is not buildable".to_string()),
                Just("not parameterized".to_string()),
                Just("&amp;&quot;é\n\r\t".to_string()),
                "\\PC{0,6}",
            ]
        }

        proptest! {
            #[test]
            fn any_page_reads_safely(
                status in prop::sample::select(vec![400u16, 403, 404, 409, 422, 500, 503]),
                parts in prop::collection::vec(fragment(), 0..24),
                permission in "[A-Za-z.]{0,30}",
                who in "[a-z]{0,8}",
                with_headers in any::<bool>(),
                route in prop::sample::select(vec![TriggerRoute::Job, TriggerRoute::BuildByToken]),
            ) {
                let body = parts.concat();
                let headers = [("X-Required-Permission", permission.as_str()), ("X-You-Are-Authenticated-As", who.as_str())];
                let a = answer(status, if with_headers { &headers[..] } else { &[] }, &body);
                if let Some(r) = refusal("folder/pungi-pr", &a, true, route) {
                    let text = r.to_string();
                    prop_assert!(!text.contains(['\n', '\r']), "{text:?}");
                }
                if let Some(says) = jenkins_says(&a) {
                    prop_assert!(!says.contains(['\n', '\r']) && says.len() <= 310, "{says:?}");
                }
                let _ = is_crumb_refusal(&a);
            }
        }
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
            // Merged into the item still waiting.
            response("303 See Other", &[("Location", &item)], ""),
        ]);
        let j = jenkins(&base, true);
        let got = j.trigger("folder/my job", &job_token(), PARAMS).await.unwrap();
        assert_eq!(got, Some(QueueItem { id: 39, url: item.clone(), merged: false }));
        let got = j.trigger("folder/my job", &job_token(), PARAMS).await.unwrap();
        assert_eq!(got, Some(QueueItem { id: 39, url: item.clone(), merged: true }));

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
    async fn build_by_token_route() {
        let server = bind().await;
        // Jenkins under a context path, as behind a proxy at /jenkins/.
        let base = server.url.join("jenkins/").unwrap();
        let seen = server.answer(vec![
            // BuildRootAction: `addHeader("Location", contextPath + "/queue/item/N/")`, relative.
            response("201 Created", &[("Location", "/jenkins/queue/item/7/")], ""),
            response("303 See Other", &[("Location", "/jenkins/queue/item/7/")], ""),
            response("404 Not Found", &[], &jetty(404, "Not Found", "/jenkins/buildByToken/buildWithParameters")),
        ]);
        let j = by_token(&base);
        let item = format!("{}queue/item/7/", base);
        assert_eq!(j.trigger("folder/pungi-pr", &job_token(), PARAMS).await.unwrap(), Some(QueueItem { id: 7, url: item.clone(), merged: false }));
        assert_eq!(j.trigger("folder/pungi-pr", &job_token(), PARAMS).await.unwrap(), Some(QueueItem { id: 7, url: item, merged: true }));
        let e = j.trigger("folder/pungi-pr", &job_token(), PARAMS).await.unwrap_err();
        assert!(matches!(&e, TriggerError::Refused { refusal: Refusal::NoJobWithToken { .. }, .. }), "{e}");
        let e = PeerError::from(e);
        assert!(!e.is_retry());
        assert!(e.message().starts_with("POST /jenkins/buildByToken/buildWithParameters: 404 Not Found: no job folder/pungi-pr in Jenkins with a trigger token"), "{e}");

        // No crumb asked for: three requests, all POSTs, the job in the query, the token in the body.
        let requests = seen.await.unwrap();
        for r in &requests {
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            assert_eq!(head.lines().next().unwrap(), "POST /jenkins/buildByToken/buildWithParameters?job=folder%2Fpungi-pr HTTP/1.1");
            assert!(body.starts_with("token=JOBTOKEN&cause=203&"), "{body}");
            assert!(!head.to_lowercase().contains("jenkins-crumb"), "{head}");
        }
    }

    #[tokio::test]
    async fn trigger_refusals_are_final_at_once() {
        let server = bind().await;
        let base = server.url.clone();
        let uri = "/job/pungi-pr/buildWithParameters";
        let oops = "<!DOCTYPE html><html><head data-crumb-header=\"Jenkins-Crumb\"><title>Jenkins</title></head>\
                    <body><h1>Oops!</h1><h2>A problem occurred while processing the request</h2><p>Logging ID=2b6e</p></body></html>";
        let seen = server.answer(vec![
            response("404 Not Found", &[], ""), // crumb issuer: crumbs off
            response("409 Conflict", &[], &jetty(409, "pungi-pr is not buildable", uri)),
            response("400 Bad Request", &[], &jetty(400, "pungi-pr is not parameterized", uri)),
            // Jenkins 2.224 to 2.524, stack traces hidden: the job is asked.
            response("500 Server Error", &[], oops),
            response("200 OK", &[], r#"{"_class": "hudson.model.FreeStyleProject", "property": [{"_class": "jenkins.model.BuildDiscarderProperty"}]}"#),
            // The same 500 for a parameterized job: worth retrying.
            response("500 Server Error", &[], oops),
            response("200 OK", &[], r#"{"_class": "hudson.model.FreeStyleProject", "property": [{"_class": "hudson.model.ParametersDefinitionProperty",
                "parameterDefinitions": [{"_class": "hudson.model.StringParameterDefinition", "name": "REPO"}]}]}"#),
            // An answer that does not list the properties says nothing: retried.
            response("500 Server Error", &[], oops),
            response("200 OK", &[], r#"{"_class": "hudson.model.FreeStyleProject", "name": "pungi-pr"}"#),
            // Nor does a job Jenkins cannot show now.
            response("500 Server Error", &[], oops),
            response("503 Service Unavailable", &[], ""),
        ]);
        let j = jenkins(&base, false);
        let token = job_token();
        let msg = |e: TriggerError| PeerError::from(e);
        let e = msg(j.trigger("pungi-pr", &token, PARAMS).await.unwrap_err());
        assert_eq!(
            e,
            PeerError::Fatal(format!("POST {uri}: 409 Conflict: {}", Refusal::Disabled { job: "pungi-pr".into() }))
        );
        let e = msg(j.trigger("pungi-pr", &token, PARAMS).await.unwrap_err());
        assert!(!e.is_retry() && e.message().contains("400 Bad Request: job pungi-pr has no parameters: Jenkins says \"pungi-pr is not parameterized\""), "{e}");
        let e = msg(j.trigger("pungi-pr", &token, PARAMS).await.unwrap_err());
        assert!(!e.is_retry() && e.message().contains("500 Internal Server Error: job pungi-pr has no parameters: Jenkins answers 500"), "{e}");
        for _ in 0..3 {
            let e = msg(j.trigger("pungi-pr", &token, PARAMS).await.unwrap_err());
            assert!(e.is_retry() && e.message().ends_with("500 Internal Server Error"), "{e}");
        }
        let requests = seen.await.unwrap();
        let lines: Vec<&str> = requests.iter().map(|r| r.lines().next().unwrap()).collect();
        assert_eq!(lines[4], "GET /job/pungi-pr/api/json?tree=property%5BparameterDefinitions%5Bname%5D%5D HTTP/1.1");
    }

    #[tokio::test]
    async fn stale_crumb_is_refreshed_once() {
        let server = bind().await;
        let base = server.url.clone();
        let crumb = |c: &str| {
            response("200 OK", &[], &format!(r#"{{"crumb": "{c}", "crumbRequestField": "Jenkins-Crumb"}}"#))
        };
        let no_crumb = response("403 Forbidden", &[], &jetty(403, NO_VALID_CRUMB, "/job/pungi/buildWithParameters"));
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
        assert!(matches!(&e, TriggerError::Refused { refusal: Refusal::Crumb, .. }), "{e}");
        assert_eq!(
            PeerError::from(e),
            PeerError::Fatal(format!("POST /job/pungi/buildWithParameters: 403 Forbidden: {}", Refusal::Crumb))
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
    async fn a_403_page_that_mentions_crumbs_is_not_retried_for_a_crumb() {
        let server = bind().await;
        let base = server.url.clone();
        let headers = denied_headers("ci", "hudson.model.Item.Build");
        let seen = server.answer(vec![
            response("200 OK", &[], r#"{"crumb": "c1", "crumbRequestField": "Jenkins-Crumb"}"#),
            response("403 Forbidden", &headers, AUTHENTICATED_403),
        ]);
        let j = jenkins(&base, true);
        let e = j.trigger("pungi", &job_token(), PARAMS).await.unwrap_err();
        assert!(matches!(&e, TriggerError::Refused { refusal: Refusal::LacksPermission { .. }, .. }), "{e}");
        // One crumb, one POST: no second crumb fetched.
        assert_eq!(seen.await.unwrap().len(), 2);
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
        let e = PeerError::from(j.trigger("nope", &token, PARAMS).await.unwrap_err());
        assert_eq!(e, PeerError::Fatal(format!("POST /job/nope/buildWithParameters: 404 Not Found: {}", Refusal::NoSuchJob { job: "nope".into() })));
        let e = PeerError::from(j.trigger("pungi", &token, PARAMS).await.unwrap_err());
        assert_eq!(e.message(), "POST /job/pungi/buildWithParameters: 403 Forbidden: forbidden");
        let e = PeerError::from(j.trigger("pungi", &token, PARAMS).await.unwrap_err());
        assert_eq!(e, PeerError::Retry("POST /job/pungi/buildWithParameters: 503 Service Unavailable (retry after 10 s)".into()));
        let e = PeerError::from(j.trigger("pungi", &token, PARAMS).await.unwrap_err());
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
            response("404 Not Found", &[], &jetty(404, "Provided id (41) not found", "/queue/cancelItem")),
            response("500 Server Error", &[], &jetty(500, "Could not cancel run for id 41", "/queue/cancelItem")),
            response("422 Unprocessable Entity", &[], &jetty(422, "Item for id (41) is not cancellable", "/queue/cancelItem")),
            response("500 Server Error", &[], &jetty(500, "Server Error", "/queue/cancelItem")),
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
        assert_eq!(j.cancel_queue_item(41).await.unwrap(), CancelOutcome::Cancelled);
        assert_eq!(j.cancel_queue_item(41).await.unwrap(), CancelOutcome::Unknown);
        assert_eq!(j.cancel_queue_item(41).await.unwrap(), CancelOutcome::LeftQueue);
        let e = j.cancel_queue_item(41).await.unwrap_err();
        assert_eq!(
            e,
            PeerError::Fatal(
                "POST /queue/cancelItem: 422 Unprocessable Entity: the Jenkins user lacks Job/Cancel \
                 (Item for id (41) is not cancellable)"
                    .into()
            )
        );
        assert!(j.cancel_queue_item(41).await.unwrap_err().is_retry());
        j.stop_build("a/b", 149).await.unwrap();
        let e = j.stop_build("a/b", 149).await.unwrap_err();
        assert_eq!(e, PeerError::Fatal("POST /job/a/job/b/149/stop: 401 Unauthorized: user/api_token rejected".into()));

        let requests = seen.await.unwrap();
        let lines: Vec<&str> = requests.iter().map(|r| r.lines().next().unwrap()).collect();
        assert_eq!(lines[0], "GET /queue/item/41/api/json HTTP/1.1");
        assert_eq!(
            lines[2],
            "GET /job/a/job/b/149/api/json?tree=number%2CqueueId%2Curl%2Cbuilding%2Cresult%2Ctimestamp%2Cduration%2CestimatedDuration%2C\
             actions%5Bparameters%5Bname%2Cvalue%5D%2Ccauses%5Bnote%2CshortDescription%5D%5D HTTP/1.1"
        );
        assert_eq!(lines[5], "GET /crumbIssuer/api/json HTTP/1.1");
        assert_eq!(lines[6], "POST /queue/cancelItem?id=41 HTTP/1.1");
        assert_eq!(lines[11], "POST /job/a/job/b/149/stop HTTP/1.1");
    }

    #[tokio::test]
    async fn job_builds_and_queue_in_one_request_each() {
        let server = bind().await;
        let base = server.url.clone();
        let seen = server.answer(vec![
            response("200 OK", &[], include_str!("../tests/fixtures/constructed.jenkins.job_builds.json")),
            response("200 OK", &[], include_str!("../tests/fixtures/constructed.jenkins.queue.json")),
            response("404 Not Found", &[], &jetty(404, "Not Found", "/job/gone/api/json")),
        ]);
        let j = jenkins(&base, true);
        let builds = j.job_builds("pungi-pr", 4).await.unwrap();
        assert_eq!(builds.iter().map(|b| b.number).collect::<Vec<_>>(), [151, 150, 149, 148]);
        let queue = j.queue_items().await.unwrap();
        assert_eq!(queue.len(), 3);
        assert_eq!(queue[2].state, QueueState::Waiting { why: Some("Build #151 is already in progress (ETA: 6 min 52 sec)".into()) });
        let e = j.job_builds("gone", 4).await.unwrap_err();
        assert!(!e.is_retry() && e.message().contains("no job gone in Jenkins"), "{e}");

        let requests = seen.await.unwrap();
        let query = |r: &str| {
            let target = r.lines().next().unwrap().split(' ').nth(1).unwrap().to_string();
            let url = Url::parse(&format!("http://j{target}")).unwrap();
            (url.path().to_string(), url.query_pairs().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
        };
        assert_eq!(
            query(&requests[0]),
            (
                "/job/pungi-pr/api/json".into(),
                vec![format!("tree=builds[{BUILD_FIELDS}]{{0,4}}")]
            )
        );
        assert!(query(&requests[0]).1[0].ends_with("causes[note,shortDescription]]]{0,4}"));
        assert_eq!(
            query(&requests[1]),
            ("/queue/api/json".into(), vec!["tree=items[id,task[name,url],why,cancelled,executable[number,url]]".to_string()])
        );
    }

    #[tokio::test]
    async fn withdraw_dequeues_or_stops() {
        let server = bind().await;
        let base = server.url.clone();
        let waiting = r#"{"_class": "hudson.model.Queue$WaitingItem", "id": 41, "why": "In the quiet period"}"#;
        let started = r#"{"_class": "hudson.model.Queue$LeftItem", "id": 41, "cancelled": false, "why": null,
            "executable": {"_class": "hudson.model.FreeStyleBuild", "number": 151, "url": "http://j/job/pungi-pr/151/"}}"#;
        let seen = server.answer(vec![
            // 1: waiting, cancelled.
            response("200 OK", &[], waiting),
            response("404 Not Found", &[], ""), // crumb issuer: off
            response("204 No Content", &[], ""),
            // 2: waiting, but it starts before the cancel lands: stopped instead.
            response("200 OK", &[], waiting),
            response("500 Server Error", &[], &jetty(500, "Could not cancel run for id 41", "/queue/cancelItem")),
            response("200 OK", &[], started),
            response("302 Found", &[("Location", "http://j/job/pungi-pr/151/")], ""),
            // 3: the item is forgotten: the build is found by its queue id.
            response("404 Not Found", &[], ""),
            response("200 OK", &[], include_str!("../tests/fixtures/constructed.jenkins.job_builds.json")),
            response("302 Found", &[("Location", "http://j/job/pungi-pr/151/")], ""),
            // 4: forgotten, and its build is over: nothing to do.
            response("404 Not Found", &[], ""),
            response("200 OK", &[], include_str!("../tests/fixtures/constructed.jenkins.job_builds.json")),
        ]);
        let j = jenkins(&base, false);
        assert_eq!(j.withdraw("pungi-pr", None, Some(41)).await.unwrap(), Withdrawn::Dequeued);
        assert_eq!(j.withdraw("pungi-pr", None, Some(41)).await.unwrap(), Withdrawn::Stopped(151));
        assert_eq!(j.withdraw("pungi-pr", None, Some(907)).await.unwrap(), Withdrawn::Stopped(151));
        assert_eq!(j.withdraw("pungi-pr", None, Some(903)).await.unwrap(), Withdrawn::Nothing);
        assert_eq!(j.withdraw("pungi-pr", None, None).await.unwrap(), Withdrawn::Nothing);
        let requests = seen.await.unwrap();
        let lines: Vec<&str> = requests.iter().map(|r| r.lines().next().unwrap()).collect();
        assert_eq!(lines[2], "POST /queue/cancelItem?id=41 HTTP/1.1");
        assert_eq!(lines[6], "POST /job/pungi-pr/151/stop HTTP/1.1");
        assert!(lines[8].starts_with("GET /job/pungi-pr/api/json?tree=builds"), "{}", lines[8]);
        assert_eq!(lines[9], "POST /job/pungi-pr/151/stop HTTP/1.1");
        assert_eq!(lines.len(), 12);
    }
}
