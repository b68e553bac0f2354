//! The status page, the JSON API, `/metrics` and `/healthz`: a small HTTP
//! server (axum) on the core's tokio runtime, off unless
//! `poormanci.web.listen` is set. It only reads the state store, through
//! read-only connections of its own, on blocking threads: a page view never
//! waits on, or delays, a message.
//!
//! ```text
//!     /                                   every project: counts, chart, recent runs
//!     /<project>/runs[?before=<run>]      a project's runs, a page at a time
//!     /<project>/pull-request/<n>         every run of a PR, and why
//!     /api/v1/projects, /api/v1/runs?project=…, /api/v1/<project>/pull-request/<n>
//!     /metrics, /healthz
//! ```

pub mod api;
#[cfg(test)]
mod both_backends;
pub mod config;
pub mod history;
pub mod metrics;
pub mod pages;
pub mod read;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::Config;
pub use view::public_pr_page;

/// The engine is taken for dead when it has not finished a turn for this
/// long (it turns at least once a second when idle).
const ENGINE_SILENT_SECS: f64 = 30.0;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#1a7f37"/><path d="M4.5 8.5l2.2 2.2 4.8-5" stroke="#fff" stroke-width="1.8" fill="none"/></svg>"##;

struct App {
    site: view::Site,
    db: read::Db,
}

/// Listen on `poormanci.web.listen`, serving on `rt`; the address it listens
/// on, None when the web server is not configured.
pub fn start(rt: &tokio::runtime::Runtime, cfg: Arc<Config>) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = cfg.web.listen else { return Ok(None) };
    // Bound here, not in the task: a port in use is one clear line at start.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("poormanci.web.listen: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("poormanci.web.listen: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("poormanci.web.listen: {e}"))?;
    let app = Arc::new(App { db: read::Db::new(&cfg), site: view::Site::new(cfg) });
    let router = router(app);
    rt.spawn(async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => axum::serve(listener, router).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            error!("web server stopped: {e}");
        }
    });
    Ok(Some(local))
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", pages::CSS) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", FAVICON) }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/projects", get(api_projects))
        .route("/api/v1/runs", get(api_runs))
        .route("/api/v1/{*path}", get(api_pull_request))
        .route("/{*path}", get(page))
        .with_state(app)
}

// ---- responses ---------------------------------------------------------------

fn with_headers(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = with_headers(StatusCode::OK, content_type, body.to_string());
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    with_headers(status, "text/html; charset=utf-8", body)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    with_headers(status, "application/json", value.to_string())
}

fn text(status: StatusCode, body: String) -> Response {
    with_headers(status, "text/plain; charset=utf-8", body)
}

/// Run `f` on a blocking thread (the store's queries and rendering),
/// keeping the runtime's two workers free for the peers' requests; the
/// PostgreSQL client must not be called from async code at all.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error while drawing the page\n".into()))
}

fn page_error(app: &App, status: StatusCode, title: &str, text: &str) -> Response {
    if status.is_server_error() {
        warn!("web: {title}: {text}");
    }
    html(status, pages::error(&app.site, title, text))
}

fn number<T: std::str::FromStr>(query: &HashMap<String, String>, key: &str) -> Result<Option<T>, String> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| format!("{key} must be a number")),
    }
}

/// `pungi/pull-request/5` -> ("pungi", 5); `rpms/python-foo/runs` -> ("rpms/python-foo", None).
enum Target {
    Runs(String),
    PullRequest(String, u64),
}

fn target(path: &str) -> Option<Target> {
    let path = path.trim_matches('/');
    if let Some(project) = path.strip_suffix("/runs") {
        return Some(Target::Runs(project.to_string()));
    }
    let (project, n) = path.rsplit_once("/pull-request/")?;
    Some(Target::PullRequest(project.to_string(), n.parse().ok()?))
}

// ---- handlers ------------------------------------------------------------------

async fn index(State(app): State<Arc<App>>) -> Response {
    blocking(move || {
        let now = crate::engine::now();
        match app.db.with(|db| Ok(pages::index(&app.site, db, now))) {
            Ok(Ok(body)) => html(StatusCode::OK, body),
            Ok(Err(e)) | Err(e) => page_error(&app, StatusCode::SERVICE_UNAVAILABLE, "The state store cannot be read", &e),
        }
    })
    .await
}

async fn page(State(app): State<Arc<App>>, Path(path): Path<String>, Query(query): Query<HashMap<String, String>>) -> Response {
    blocking(move || {
        let now = crate::engine::now();
        let target = target(&path).filter(|t| match t {
            Target::Runs(p) | Target::PullRequest(p, _) => app.site.cfg.projects.contains_key(p),
        });
        let result = match target {
            None => return page_error(&app, StatusCode::NOT_FOUND, "Not found", "There is no such page, or the project is not configured."),
            Some(Target::Runs(project)) => match number::<i64>(&query, "before") {
                Ok(before) => app.db.with(|db| Ok(pages::project(&app.site, db, &project, before, now))),
                Err(e) => return page_error(&app, StatusCode::BAD_REQUEST, "Bad request", &e),
            },
            Some(Target::PullRequest(project, pr)) => app.db.with(|db| Ok(pages::pull_request(&app.site, db, &project, pr, now))),
        };
        match result {
            Ok(Ok(body)) => html(StatusCode::OK, body),
            Ok(Err(e)) | Err(e) => page_error(&app, StatusCode::SERVICE_UNAVAILABLE, "The state store cannot be read", &e),
        }
    })
    .await
}

fn api_answer(result: Result<serde_json::Value, String>) -> Response {
    match result {
        Ok(value) => json(StatusCode::OK, value),
        Err(e) => {
            warn!("web: {e}");
            json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": e}))
        }
    }
}

async fn api_projects(State(app): State<Arc<App>>) -> Response {
    blocking(move || api_answer(app.db.with(|db| api::projects(&app.site, db)))).await
}

async fn api_runs(State(app): State<Arc<App>>, Query(query): Query<HashMap<String, String>>) -> Response {
    blocking(move || {
        let bad = |e: String| json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e}));
        let Some(project) = query.get("project").filter(|p| app.site.cfg.projects.contains_key(*p)) else {
            return bad("project= must name a configured project".into());
        };
        let (before, limit) = match (number::<i64>(&query, "before"), number::<usize>(&query, "limit")) {
            (Ok(b), Ok(l)) => (b, l),
            (Err(e), _) | (_, Err(e)) => return bad(e),
        };
        api_answer(app.db.with(|db| api::runs(&app.site, db, project, before, limit)))
    })
    .await
}

async fn api_pull_request(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    blocking(move || match target(&path) {
        Some(Target::PullRequest(project, pr)) if app.site.cfg.projects.contains_key(&project) => {
            api_answer(app.db.with(|db| api::pull_request(&app.site, db, &project, pr)))
        }
        _ => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "no such API path or project"})),
    })
    .await
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    blocking(move || match app.db.with(|db| Ok(metrics::scrape(db, crate::engine::now()))) {
        Ok(Ok(body)) => with_headers(StatusCode::OK, metrics::CONTENT_TYPE, body),
        Ok(Err(e)) | Err(e) => {
            warn!("web: /metrics: {e}");
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
    })
    .await
}

/// 200 while the engine thread turns and the store takes its writes; 503
/// with every reason otherwise.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    blocking(move || {
        let (beat, store_error) = metrics::health();
        let readable = app.db.with(|db| db.value::<i64>("SELECT count(*) FROM tasks", &[])).map(|_| ());
        match verdict(crate::engine::now(), beat, store_error.map(|e| app.site.redact(&e)), readable) {
            Ok(ok) => text(StatusCode::OK, format!("{ok}\n")),
            Err(problems) => text(StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {problems}\n")),
        }
    })
    .await
}

/// What `/healthz` says, from the engine's last turn (`beat`, epoch seconds),
/// the error of its last transaction, and whether the store can be read.
fn verdict(now: f64, beat: Option<f64>, store_error: Option<String>, readable: Result<(), String>) -> Result<String, String> {
    let mut problems = Vec::new();
    match beat {
        None => problems.push("engine thread: not running yet".to_string()),
        Some(at) if now - at > ENGINE_SILENT_SECS => problems.push(format!("engine thread: no sign of life for {:.0} s", now - at)),
        Some(_) => {}
    }
    if let Some(e) = store_error {
        problems.push(format!("state store: not writable: {e}"));
    }
    if let Err(e) = readable {
        problems.push(format!("state store: {e}"));
    }
    match beat {
        Some(at) if problems.is_empty() => Ok(format!("ok: engine turned {:.1} s ago; state store writable", now - at)),
        _ => Err(problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The hub tests (tests/test_web.py) see the store's side end to end. An
    // engine thread that stops turning cannot be made from outside a live
    // process (each input runs under catch_unwind; only a bug stops it), so
    // that side is checked here, on the verdict itself.
    #[test]
    fn an_engine_that_stopped_turning_is_unhealthy() {
        assert_eq!(verdict(100.0, Some(99.5), None, Ok(())), Ok("ok: engine turned 0.5 s ago; state store writable".into()));
        assert_eq!(verdict(100.0, Some(100.0 - ENGINE_SILENT_SECS - 5.0), None, Ok(())), Err("engine thread: no sign of life for 35 s".into()));
        assert_eq!(verdict(100.0, None, None, Ok(())), Err("engine thread: not running yet".into()));
    }

    #[test]
    fn every_reason_is_given() {
        let why = verdict(100.0, Some(10.0), Some("database is locked".into()), Err("unable to open database file".into())).unwrap_err();
        assert_eq!(why, "engine thread: no sign of life for 90 s; state store: not writable: database is locked; state store: unable to open database file");
    }
}
