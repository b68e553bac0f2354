//! A thin client for the parts of Pagure's API 0 we use: read a pull
//! request and its project, comment on it, flag it.

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Client, Method, RequestBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::config::PagureConfig;
use crate::http::{self, Answer, PeerError};

/// A pull request with many comments can be large; more than this is not one.
const JSON_CAP: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct Pagure {
    http: Client,
    base: Url,
    /// `token <TOKEN>`, marked sensitive so reqwest never shows it.
    auth: HeaderValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagStatus {
    Pending,
    Success,
    Failure,
    Error,
    Canceled,
}

impl FlagStatus {
    /// The name Pagure's flag form takes.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagStatus::Pending => "pending",
            FlagStatus::Success => "success",
            FlagStatus::Failure => "failure",
            FlagStatus::Error => "error",
            FlagStatus::Canceled => "canceled",
        }
    }

    /// The inverse of `as_str`.
    pub fn parse(s: &str) -> Option<FlagStatus> {
        [FlagStatus::Pending, FlagStatus::Success, FlagStatus::Failure, FlagStatus::Error, FlagStatus::Canceled]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// The token ACLs poormanci uses.
pub const PR_FLAG: &str = "pull_request_flag";
pub const PR_COMMENT: &str = "pull_request_comment";
/// Only to close a superseded run's pending flag on its older commit.
pub const COMMIT_FLAG: &str = "commit_flag";

/// What `check_token` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Pagure knows the token: `user`'s; it lacks these (project, ACL); these projects do not exist.
    Checked { user: String, missing: Vec<(String, &'static str)>, no_project: Vec<String> },
    /// Pagure refuses the token itself (unknown, expired).
    Refused(String),
    /// Pagure could not be asked (down, unreachable, not Pagure).
    Unknown(String),
}

/// A token check, said for people: `problems` (the token cannot do what
/// poormanci needs), `warnings`, and a `summary` once Pagure answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenVerdict {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub summary: Option<String>,
}

impl TokenCheck {
    pub fn verdict(&self, configured_user: Option<&str>, projects: usize) -> TokenVerdict {
        let mut v = TokenVerdict::default();
        match self {
            TokenCheck::Refused(e) => v.problems.push(format!(
                "poormanci.pagure.token: Pagure refuses it ({e}); create a new API token with the ACLs {PR_FLAG} and {PR_COMMENT}. \
                 Until then results are kept and delivered once it works"
            )),
            TokenCheck::Unknown(e) => v.warnings.push(format!("cannot check the Pagure token: {e}; going on, it is checked again at the next start")),
            TokenCheck::Checked { user, missing, no_project } => {
                let mut acls: Vec<&str> = missing.iter().map(|(_, acl)| *acl).collect();
                acls.sort();
                acls.dedup();
                for acl in acls {
                    let on: Vec<&str> = missing.iter().filter(|(_, a)| *a == acl).map(|(p, _)| p.as_str()).collect();
                    v.problems.push(format!(
                        "poormanci.pagure.token (user {user}): lacks the ACL {acl} on {}; add it to the token (or use a token of a user \
                         with access there). Until then those results are kept and delivered once it works",
                        on.join(", ")
                    ));
                }
                for project in no_project {
                    v.problems.push(format!("poormanci.projects[{project:?}]: Pagure has no project {project}"));
                }
                if let Some(configured) = configured_user.filter(|c| c != user) {
                    v.warnings.push(format!(
                        "poormanci.pagure.user is {configured:?} but the token is {user:?}'s: its own comments and flags will not be recognised"
                    ));
                }
                v.summary = Some(match v.problems.len() {
                    0 => format!("Pagure token of {user}: {PR_FLAG} and {PR_COMMENT} on {projects} project(s)"),
                    n => format!("Pagure token of {user}: {n} problem(s) on {projects} project(s)"),
                });
            }
        }
        v
    }
}

/// A flag on a PR: what poormanci decides and what Pagure is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub status: FlagStatus,
    pub percent: Option<u8>,
    /// Shown beside the flag; Pagure's form calls it `comment`.
    pub text: String,
    /// Must have a dotted host, `localhost` or an IP, or Pagure answers 400.
    pub url: String,
}

/// Who has which access to a project, level by level, as
/// `GET /api/0/<project>` reports it (`access_users` / `access_groups`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Access {
    #[serde(default)]
    pub owner: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub commit: Vec<String>,
    /// Commit to some branches only.
    #[serde(default)]
    pub collaborator: Vec<String>,
    #[serde(default)]
    pub ticket: Vec<String>,
}

/// A project's access lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProjectAcl {
    #[serde(default, rename = "access_users")]
    pub users: Access,
    #[serde(default, rename = "access_groups")]
    pub groups: Access,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct User {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PrComment {
    pub comment: String,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Repo {
    /// `forks/bob/test`, `rpms/foo`.
    pub fullname: String,
    /// Its owner: for a fork, the person who can push to it.
    #[serde(default)]
    pub user: Option<User>,
}

/// A pull request, as `GET /api/0/<project>/pull-request/<id>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    /// The PR's head commit (`commit_stop`); null before its first push is known.
    #[serde(default, rename = "commit_stop")]
    pub head: Option<String>,
    /// Open, Merged or Closed.
    pub status: String,
    #[serde(default, rename = "user")]
    pub author: Option<User>,
    /// Where the PR's commits come from; null for a remote PR.
    #[serde(default, rename = "repo_from")]
    pub source_repo: Option<Repo>,
    /// A remote PR's git URL (`source_repo` is then null).
    #[serde(default)]
    pub remote_git: Option<String>,
    /// The PR's own branch.
    #[serde(default, rename = "branch_from")]
    pub source_branch: Option<String>,
    /// The branch it merges into.
    #[serde(default, rename = "branch")]
    pub target_branch: Option<String>,
    #[serde(default)]
    pub comments: Vec<PrComment>,
}

impl PullRequest {
    /// The PR already shows this comment (by `user`, when given).
    pub fn has_comment(&self, user: Option<&str>, text: &str) -> bool {
        self.comments.iter().any(|c| {
            c.comment.trim() == text.trim() && user.is_none_or(|u| c.user.as_ref().is_some_and(|cu| cu.name == u))
        })
    }
}

/// What a call is about, for error messages.
struct Target<'a> {
    project: &'a str,
    id: Option<u64>,
    /// The token ACL the endpoint needs.
    acl: Option<&'a str>,
}

impl Pagure {
    pub fn new(cfg: &PagureConfig) -> Result<Self, String> {
        let mut auth = HeaderValue::from_str(&format!("token {}", cfg.token.expose()))
            .map_err(|_| "poormanci.pagure.token: not usable in an HTTP header".to_string())?;
        auth.set_sensitive(true);
        Ok(Pagure { http: http::client(&cfg.peer)?, base: cfg.peer.url.clone(), auth })
    }

    /// `GET /api/0/<project>/pull-request/<id>`: the PR as Pagure shows it.
    pub async fn pull_request(&self, project: &str, id: u64) -> Result<PullRequest, PeerError> {
        let url = self.url(project, &["pull-request", &id.to_string()]);
        self.get(url, Target { project, id: Some(id), acl: None }).await
    }

    /// `GET /api/0/<project>`: who has which access to it.
    pub async fn project_acl(&self, project: &str) -> Result<ProjectAcl, PeerError> {
        let url = self.url(project, &[]);
        self.get(url, Target { project, id: None, acl: None }).await
    }

    /// `GET /api/0/group/<name>` → the names of its members.
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>, PeerError> {
        #[derive(Deserialize)]
        struct Group {
            #[serde(default)]
            members: Vec<String>,
        }
        let url = self.url("group", &[group]);
        let answer: Group = self.get(url, Target { project: group, id: None, acl: None }).await?;
        Ok(answer.members)
    }

    pub async fn comment(&self, project: &str, id: u64, text: &str) -> Result<(), PeerError> {
        let url = self.url(project, &["pull-request", &id.to_string(), "comment"]);
        let target = Target { project, id: Some(id), acl: Some(PR_COMMENT) };
        self.post(url, &[("comment", text)], target).await
    }

    /// Set the flag `uid` (the same uid updates it in place), shown under
    /// `username` (e.g. "Jenkins").
    pub async fn flag(&self, project: &str, id: u64, username: &str, uid: &str, flag: &Flag) -> Result<(), PeerError> {
        let url = self.url(project, &["pull-request", &id.to_string(), "flag"]);
        let percent = flag.percent.map(|p| p.min(100).to_string());
        let mut form = vec![
            ("username", username),
            ("status", flag.status.as_str()),
            ("comment", flag.text.as_str()),
            ("url", flag.url.as_str()),
            ("uid", uid),
        ];
        if let Some(p) = &percent {
            form.push(("percent", p));
        }
        let target = Target { project, id: Some(id), acl: Some(PR_FLAG) };
        self.post(url, &form, target).await
    }

    /// Set the flag `uid` on one commit of the project (`POST
    /// /api/0/<project>/c/<commit>/flag`, ACL `commit_flag`): the same
    /// (commit, uid) as a PR flag updates that flag in place.
    pub async fn commit_flag(&self, project: &str, commit: &str, username: &str, uid: &str, flag: &Flag) -> Result<(), PeerError> {
        let url = self.url(project, &["c", commit, "flag"]);
        let form = [("username", username), ("status", flag.status.as_str()), ("comment", &flag.text), ("url", &flag.url), ("uid", uid)];
        self.post(url, &form, Target { project, id: None, acl: Some(COMMIT_FLAG) }).await
    }

    /// `POST /api/0/-/whoami`: the token's user.
    pub async fn whoami(&self) -> Result<String, PeerError> {
        #[derive(Deserialize)]
        struct Me {
            username: String,
        }
        let url = http::join(&self.base, ["api", "0", "-", "whoami"]);
        let what = http::describe(&Method::POST, &url);
        let a = http::send("pagure", &what, self.request(Method::POST, url), JSON_CAP).await?;
        if !a.status.is_success() {
            return Err(error(&what, &a, &Target { project: "-", id: None, acl: None }));
        }
        Ok(a.json::<Me>(&what)?.username)
    }

    /// Does the token have `acl` on `project`? Pagure 5.13 has no call that
    /// lists a token's ACLs, but it checks the token and its ACLs before it
    /// looks for the pull request: a POST to pull request 0 (ids start at 1)
    /// answers 401 without the ACL and 404 ENOREQ with it, changing nothing.
    pub async fn has_acl(&self, project: &str, acl: &str) -> Result<bool, PeerError> {
        let endpoint = match acl {
            PR_FLAG => "flag",
            PR_COMMENT => "comment",
            other => return Err(PeerError::Fatal(format!("no probe for the ACL {other}"))),
        };
        let url = self.url(project, &["pull-request", "0", endpoint]);
        let what = http::describe(&Method::POST, &url);
        let a = http::send("pagure", &what, self.request(Method::POST, url).form(&[("probe", "1")]), JSON_CAP).await?;
        let code = serde_json::from_slice::<ApiError>(&a.body).map(|e| e.error_code).unwrap_or_default();
        match (a.status.as_u16(), code.as_str()) {
            (404, "ENOREQ") => Ok(true),
            (401 | 403, _) => Ok(false),
            _ => Err(error(&what, &a, &Target { project, id: Some(0), acl: Some(acl) })),
        }
    }

    /// What Pagure says of the token: whose it is, and which of the ACLs
    /// poormanci needs it lacks on which project.
    pub async fn check_token(&self, projects: &[&str], acls: &[&'static str]) -> TokenCheck {
        let user = match self.whoami().await {
            Ok(user) => user,
            Err(PeerError::Unauthorized(e)) => return TokenCheck::Refused(e),
            Err(e) => return TokenCheck::Unknown(e.message().to_string()),
        };
        let mut missing = Vec::new();
        let mut no_project = Vec::new();
        for project in projects {
            for acl in acls {
                match self.has_acl(project, acl).await {
                    Ok(true) => {}
                    Ok(false) => missing.push((project.to_string(), *acl)),
                    Err(e) if e.message().contains("ENOPROJECT") => {
                        no_project.push(project.to_string());
                        break;
                    }
                    Err(e) => return TokenCheck::Unknown(e.message().to_string()),
                }
            }
        }
        TokenCheck::Checked { user, missing, no_project }
    }

    /// `<base>/api/0/<namespace>/<name>/<rest>`, each part one encoded segment.
    fn url(&self, project: &str, rest: &[&str]) -> Url {
        http::join(&self.base, ["api", "0"].into_iter().chain(project.split('/')).chain(rest.iter().copied()))
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).header(AUTHORIZATION, self.auth.clone())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: Url, target: Target<'_>) -> Result<T, PeerError> {
        let what = http::describe(&Method::GET, &url);
        let a = http::send("pagure", &what, self.request(Method::GET, url), JSON_CAP).await?;
        if !a.status.is_success() {
            return Err(error(&what, &a, &target));
        }
        a.json(&what)
    }

    /// POST a form; Pagure answers `{"message": "..."}` on success.
    async fn post(&self, url: Url, form: &[(&str, &str)], target: Target<'_>) -> Result<(), PeerError> {
        let what = http::describe(&Method::POST, &url);
        let a = http::send("pagure", &what, self.request(Method::POST, url).form(form), JSON_CAP).await?;
        if !a.status.is_success() {
            return Err(error(&what, &a, &target));
        }
        #[derive(Deserialize)]
        struct Done {
            message: String,
        }
        let done: Done = a.json(&what)?;
        debug!("{what}: {}", http::detail(&done.message));
        Ok(())
    }
}

/// Pagure's error answer: `{"error", "error_code", "errors"}`.
#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    error: Option<String>,
    error_code: String,
    #[serde(default)]
    errors: Option<Value>,
}

/// One line for a non-2xx answer, from Pagure's error code when it gave one.
fn error(what: &str, a: &Answer, t: &Target) -> PeerError {
    let e = api_error(what, a, t);
    // A bad, expired or short-handed token: kept for when it is fixed.
    match a.status.as_u16() {
        401 | 403 => PeerError::Unauthorized(e.message().to_string()),
        _ => e,
    }
}

fn api_error(what: &str, a: &Answer, t: &Target) -> PeerError {
    let Ok(e) = serde_json::from_slice::<ApiError>(&a.body) else {
        // Not Pagure speaking (a proxy's 502 page...): the status says it all.
        return http::status_error(what, a, "");
    };
    let errors = e.errors.as_ref().map(compact).unwrap_or_default();
    let detail = match e.error_code.as_str() {
        "EINVALIDTOK" => match t.acl {
            Some(acl) => format!("the Pagure token is invalid or lacks the {acl} ACL ({errors})"),
            None => format!("the Pagure token is invalid or expired ({errors})"),
        },
        "ENOREQ" => match t.id {
            Some(id) => format!("no pull request {}#{id}", t.project),
            None => "no such pull request".to_string(),
        },
        "ENOPROJECT" => format!("no project {}", t.project),
        _ => {
            let error = e.error.unwrap_or_default();
            match (error.is_empty(), errors.is_empty()) {
                (false, false) => format!("{error}: {errors}"),
                (false, true) => error,
                _ => errors,
            }
        }
    };
    let code = http::detail(&e.error_code);
    let msg = format!("{what}: {} {code}: {}", a.status.as_u16(), http::detail(&detail));
    PeerError::for_status(a.status, msg)
}

/// Pagure's `errors`, compactly: `status: Not a valid choice.; url: Invalid input.`
fn compact(errors: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string())).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    };
    match errors {
        Value::Object(fields) => fields.iter().map(|(k, v)| format!("{k}: {}", text(v))).collect::<Vec<_>>().join("; "),
        other => text(other),
    }
}

impl std::fmt::Debug for Pagure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pagure").field("base", &http::shown_url(&self.base)).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::http::test_server::{bind, response};
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    fn pagure(url: &Url) -> Pagure {
        let cfg = Config::from_value(&serde_json::json!({
            "poormanci.pagure": {"url": url.as_str(), "token": "PAGURETOKEN", "timeout": 5},
            "poormanci.jenkins": {"url": "https://jenkins.example.org"},
            "poormanci.projects": {"pungi": [{"job": "pungi", "token": "x"}]},
            "poormanci.state_dir": "/tmp",
        }))
        .unwrap();
        Pagure::new(&cfg.pagure).unwrap()
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer { status: StatusCode::from_u16(status).unwrap(), headers: HeaderMap::new(), body: body.into() }
    }

    const FLAG: Target = Target { project: "test", id: Some(1), acl: Some("pull_request_flag") };
    const COMMENT: Target = Target { project: "test", id: Some(1), acl: Some("pull_request_comment") };
    const GET: Target = Target { project: "rpms/python-foo", id: Some(999), acl: None };

    // Bodies recorded from Pagure 5.13.2 (shared/design/pagure-api-samples.md §3).
    const INVALID_TOKEN: &str = r#"{"error": "Invalid or expired token. Please visit http://127.0.0.1:5000/settings#nav-api-tab to get or renew your API token.", "error_code": "EINVALIDTOK", "errors": "Invalid token"}"#;
    const MISSING_FLAG_ACL: &str = r#"{"error": "Invalid or expired token. Please visit http://127.0.0.1:5000/settings#nav-api-tab to get or renew your API token.", "error_code": "EINVALIDTOK", "errors": "Missing ACLs: pull_request_flag"}"#;
    const NO_PR: &str = r#"{"error": "Pull-Request not found", "error_code": "ENOREQ"}"#;
    const NO_PROJECT: &str = r#"{"error": "Project not found", "error_code": "ENOPROJECT"}"#;
    const BAD_FLAG: &str = r#"{"error": "Invalid or incomplete input submitted", "error_code": "EINVALIDREQ", "errors": {"status": ["Not a valid choice."], "url": ["Invalid input."]}}"#;

    #[test]
    fn recorded_errors() {
        let what = "POST /api/0/test/pull-request/1/flag";
        assert_eq!(
            error(what, &answer(401, MISSING_FLAG_ACL), &FLAG),
            PeerError::Unauthorized(format!(
                "{what}: 401 EINVALIDTOK: the Pagure token is invalid or lacks the pull_request_flag ACL (Missing ACLs: pull_request_flag)"
            ))
        );
        assert_eq!(
            error("POST /c", &answer(401, INVALID_TOKEN), &COMMENT).message(),
            "POST /c: 401 EINVALIDTOK: the Pagure token is invalid or lacks the pull_request_comment ACL (Invalid token)"
        );
        assert_eq!(
            error("GET /p", &answer(401, INVALID_TOKEN), &GET).message(),
            "GET /p: 401 EINVALIDTOK: the Pagure token is invalid or expired (Invalid token)"
        );
        assert_eq!(error("GET /p", &answer(404, NO_PR), &GET).message(), "GET /p: 404 ENOREQ: no pull request rpms/python-foo#999");
        assert_eq!(error("GET /p", &answer(404, NO_PROJECT), &GET).message(), "GET /p: 404 ENOPROJECT: no project rpms/python-foo");
        assert_eq!(
            error(what, &answer(400, BAD_FLAG), &FLAG),
            PeerError::Fatal(format!(
                "{what}: 400 EINVALIDREQ: Invalid or incomplete input submitted: status: Not a valid choice.; url: Invalid input."
            ))
        );
    }

    #[test]
    fn unrecognised_errors() {
        let e = error("GET /p", &answer(502, "<html><body>Bad Gateway</body></html>"), &GET);
        assert_eq!(e, PeerError::Retry("GET /p: 502 Bad Gateway".into()));
        let e = error("GET /p", &answer(500, r#"{"error": "boom", "error_code": "ENOCODE"}"#), &GET);
        assert_eq!(e, PeerError::Retry("GET /p: 500 ENOCODE: boom".into()));
        let e = error("GET /p", &answer(403, "{}"), &GET);
        assert_eq!(e, PeerError::Unauthorized("GET /p: 403 Forbidden".into()));
    }

    #[test]
    fn flag_statuses() {
        let all = [FlagStatus::Pending, FlagStatus::Success, FlagStatus::Failure, FlagStatus::Error, FlagStatus::Canceled];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["pending", "success", "failure", "error", "canceled"]);
        assert!(all.iter().all(|s| FlagStatus::parse(s.as_str()) == Some(*s)));
        assert_eq!(FlagStatus::parse("cancelled"), None);
    }

    #[test]
    fn debug_hides_token() {
        let p = pagure(&Url::parse("https://pagure.example.org").unwrap());
        assert!(!format!("{p:?}").contains("PAGURETOKEN"));
    }

    fn split(request: &str) -> (&str, String, &str) {
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap(), head.to_lowercase(), body)
    }

    #[tokio::test]
    async fn flag_round_trip() {
        let server = bind().await;
        let base = server.url.clone();
        let seen = server.answer(vec![
            response("200 OK", &[("Content-Type", "application/json")], r#"{"flag": {}, "message": "Flag added", "uid": "jenkins-pungi-7", "user": "cibot"}"#),
            response("401 UNAUTHORIZED", &[], MISSING_FLAG_ACL),
        ]);
        let p = pagure(&base);
        let flag = Flag {
            status: FlagStatus::Success,
            text: "Build #7 passed".into(),
            url: "https://jenkins.example.org/job/pungi/7/".into(),
            percent: Some(100),
        };
        p.flag("pungi", 234, "Jenkins", "jenkins-pungi-7", &flag).await.unwrap();
        let e = p.flag("pungi", 234, "Jenkins", "jenkins-pungi-7", &flag).await.unwrap_err();
        assert!(!e.is_retry() && e.message().ends_with("(Missing ACLs: pull_request_flag)"), "{e}");
        assert!(!e.message().contains("PAGURETOKEN"));

        let requests = seen.await.unwrap();
        let (line, head, body) = split(&requests[0]);
        assert_eq!(line, "POST /api/0/pungi/pull-request/234/flag HTTP/1.1");
        assert!(head.contains("\r\nauthorization: token paguretoken\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/x-www-form-urlencoded\r\n"), "{head}");
        assert_eq!(
            body,
            "username=Jenkins&status=success&comment=Build+%237+passed&url=https%3A%2F%2Fjenkins.example.org%2Fjob%2Fpungi%2F7%2F&uid=jenkins-pungi-7&percent=100"
        );
    }

    #[tokio::test]
    async fn comment_and_get_round_trips() {
        let server = bind().await;
        let base = server.url.clone();
        let seen = server.answer(vec![
            response("200 OK", &[], r#"{"message": "Comment added"}"#),
            response("200 OK", &[], r#"{"id": 7, "status": "Open", "commit_stop": "abc", "comments": [{"comment": "hi", "user": {"name": "cibot"}}]}"#),
            response("404 NOT FOUND", &[], NO_PR),
            response("200 OK", &[], r#"{"access_users": {"admin": [], "owner": ["alice"]}}"#),
            response("200 OK", &[], r#"{"unexpected": true}"#),
        ]);
        let p = pagure(&base);
        p.comment("pungi", 7, "Build #7 started").await.unwrap();
        let pr = p.pull_request("rpms/python-foo", 7).await.unwrap();
        assert_eq!((pr.status.as_str(), pr.head.as_deref()), ("Open", Some("abc")));
        assert!(pr.has_comment(Some("cibot"), " hi\n") && !pr.has_comment(Some("alice"), "hi"));
        let e = p.pull_request("rpms/python-foo", 8).await.unwrap_err();
        assert_eq!(
            e,
            PeerError::Fatal("GET /api/0/rpms/python-foo/pull-request/8: 404 ENOREQ: no pull request rpms/python-foo#8".into())
        );
        assert_eq!(p.project_acl("rpms/python-foo").await.unwrap().users.owner, ["alice"]);
        let e = p.comment("pungi", 7, "x").await.unwrap_err();
        assert!(!e.is_retry() && e.message().contains("not the documented JSON"), "{e}");

        let requests = seen.await.unwrap();
        let (line, head, body) = split(&requests[0]);
        assert_eq!(line, "POST /api/0/pungi/pull-request/7/comment HTTP/1.1");
        assert!(head.contains("\r\nauthorization: token paguretoken\r\n"), "{head}");
        assert_eq!(body, "comment=Build+%237+started");
        assert_eq!(split(&requests[1]).0, "GET /api/0/rpms/python-foo/pull-request/7 HTTP/1.1");
        assert_eq!(split(&requests[3]).0, "GET /api/0/rpms/python-foo HTTP/1.1");
        assert!(requests.iter().all(|r| !split(r).0.contains("PAGURETOKEN")));
    }
}
