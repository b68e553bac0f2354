//! `/api/v1/…`: the pages' data as JSON (documented in the README).

use serde_json::{json, Value};

use crate::db::{self, Conn};
use crate::web::pages::{self, PAGE};
use crate::web::read;
use crate::web::view::Site;

/// Most runs one `/api/v1/runs` answer holds.
const MAX_LIMIT: usize = 200;

/// `GET /api/v1/projects`: every configured project, its jobs and what waits.
pub fn projects(site: &Site, db: &Conn) -> db::Result<Value> {
    let mut counts = read::counts(db)?;
    let projects: Vec<Value> = site
        .cfg
        .projects
        .iter()
        .map(|(name, jobs)| {
            json!({
                "project": name,
                "jobs": jobs.iter().map(|j| &j.job).collect::<Vec<_>>(),
                "counts": counts.remove(name).unwrap_or_default(),
                "runs": format!("{}/api/v1/runs?project={}", site.base, encode(name)),
                "page": format!("{}/{name}/runs", site.base),
            })
        })
        .collect();
    Ok(json!({ "projects": projects }))
}

/// `GET /api/v1/runs?project=…[&before=<run id>][&limit=…]`: newest first;
/// `next` is the URL of the following page, null on the last.
pub fn runs(site: &Site, db: &Conn, project: &str, before: Option<i64>, limit: Option<usize>) -> db::Result<Value> {
    let limit = limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT);
    let rows = read::recent_runs(db, project, before, limit + 1)?;
    let next = (rows.len() > limit).then(|| format!("{}/api/v1/runs?project={}&before={}&limit={limit}", site.base, encode(project), rows[limit - 1].id));
    let runs = pages::views(site, db, rows.into_iter().take(limit).collect())?;
    Ok(json!({ "project": project, "runs": runs, "next": next }))
}

/// `GET /api/v1/<project>/pull-request/<n>`: every run of the PR, newest first.
pub fn pull_request(site: &Site, db: &Conn, project: &str, pr: u64) -> db::Result<Value> {
    let runs = pages::views(site, db, read::runs_of_pr(db, project, pr, 500)?)?;
    let approval = read::approval(db, project, pr)?;
    let first = runs.first();
    Ok(json!({
        "project": project,
        "pr": pr,
        "title": first.and_then(|r| r.run.title.clone()),
        "author": first.and_then(|r| r.run.author.clone()),
        "approved_by": approval.as_ref().map(|a| &a.0),
        "approved_at": approval.as_ref().map(|a| a.1),
        "page": site.pr_page(project, pr),
        "runs": runs,
    }))
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
