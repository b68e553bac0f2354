//! The status page's queries on both stores: one set of runs, tasks, PR
//! titles and approvals, written to SQLite and to a real PostgreSQL, must
//! give the same pages and the same API answers.
//!
//! PostgreSQL is used when `POORMANCI_TEST_PG_DSN` names a database (libpq
//! `key=value` form, without a password) and `POORMANCI_TEST_PG_PASSWORD_FILE`
//! the file with its password, if it needs one; the test says why it does
//! nothing otherwise. It works in a schema of its own, dropped at the end.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::{Config, PostgresConfig};
use crate::db::{self, vals, Conn};
use crate::web::view::Site;
use crate::web::{api, pages, read};

/// The columns the pages read, in PostgreSQL's types (SQLite takes them as
/// they are: BIGINT is an integer to it, DOUBLE PRECISION a real).
const TABLES: &str = "
CREATE TABLE runs (
    id BIGINT PRIMARY KEY, project TEXT NOT NULL, pr BIGINT NOT NULL, job TEXT NOT NULL, commit_id TEXT, pr_url TEXT NOT NULL,
    queue_id BIGINT, build BIGINT, build_url TEXT, state TEXT NOT NULL, outcome TEXT, reason TEXT,
    created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION, finished DOUBLE PRECISION
);
CREATE TABLE tasks (
    id BIGINT PRIMARY KEY, run BIGINT NOT NULL, kind TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, last_error TEXT,
    due DOUBLE PRECISION NOT NULL, created DOUBLE PRECISION
);
CREATE TABLE pull_requests (
    project TEXT NOT NULL, pr BIGINT NOT NULL, title TEXT, author TEXT, updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (project, pr)
);
CREATE TABLE approvals (
    project TEXT NOT NULL, pr BIGINT NOT NULL, by_user TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (project, pr)
);
";

const DAY: f64 = 86400.0;
/// Noon of day 100: every time below is before it.
const NOW: f64 = 100.0 * DAY + 43200.0;

fn finished(number: u64, result: &str) -> String {
    json!({"kind": "finished", "number": number, "url": format!("https://jenkins.example.org/job/j/{number}/"), "result": result}).to_string()
}

/// Runs of pungi PR 5 (two commits: one run passed, one superseded, one
/// running, one passed with its flag being retried), a gated PR 6, PR 7
/// whose trigger fails, PR 8 starting, PR 9 queued (polled) and approved,
/// and an old failure of rpms/python-foo.
fn fill(db: &Conn) {
    db.batch(TABLES).unwrap();
    let runs = [
        (1i64, "pungi", 5u64, "pungi-pr", "aaaa1111", "done", Some(finished(11, "SUCCESS")), Some(1u64), Some(11u64), NOW - 3000.0, Some(NOW - 2900.0), Some(NOW - 2800.0)),
        (2, "pungi", 5, "pungi-docs", "aaaa1111", "done", Some(json!({"kind": "superseded"}).to_string()), None, None, NOW - 2990.0, None, Some(NOW - 2000.0)),
        (3, "pungi", 5, "pungi-docs", "bbbb2222", "running", None, Some(3), Some(7), NOW - 2000.0, Some(NOW - 1900.0), None),
        (4, "pungi", 6, "pungi-pr", "cccc3333", "gated", None, None, None, NOW - 1500.0, None, None),
        (5, "pungi", 7, "pungi-pr", "dddd4444", "triggering", None, None, None, NOW - 1400.0, None, None),
        (6, "pungi", 8, "pungi-pr", "eeee5555", "triggering", None, None, None, NOW - 1300.0, None, None),
        (7, "pungi", 9, "pungi-pr", "ffff6666", "queued", None, Some(42), None, NOW - 1200.0, None, None),
        (8, "rpms/python-foo", 1, "folder/python-foo", "11117777", "done", Some(finished(3, "FAILURE")), Some(8), Some(3), NOW - 40.0 * DAY, Some(NOW - 40.0 * DAY + 60.0), Some(NOW - 40.0 * DAY + 600.0)),
        (9, "pungi", 5, "pungi-pr", "bbbb2222", "done", Some(finished(12, "SUCCESS")), Some(9), Some(12), NOW - 1000.0, Some(NOW - 900.0), Some(NOW - 800.0)),
    ];
    for (id, project, pr, job, commit, state, outcome, queue, build, created, started, finished) in runs {
        // A link from the bus that must never be followed from a page.
        let pr_url = if id == 1 { "javascript:alert(1)".to_string() } else { format!("https://pagure.io/{project}/pull-request/{pr}") };
        let build_url = build.map(|b| format!("https://jenkins.example.org/job/{job}/{b}/"));
        db.execute(
            "INSERT INTO runs (id, project, pr, job, commit_id, pr_url, queue_id, build, build_url, state, outcome, reason, created, started, finished)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            vals![id, project, pr, job, commit, pr_url, queue, build, build_url, state, outcome, "new commits pushed", created, started, finished],
        )
        .unwrap();
    }
    let refused = "POST /job/pungi-pr/buildWithParameters: 500: token BEEFCAFE refused";
    let tasks = [
        (1i64, 5i64, "trigger", 2u32, Some(refused), NOW + 60.0, NOW - 1400.0),
        (2, 6, "trigger", 0, None, NOW, NOW - 1300.0),
        (3, 7, "follow", 5, None, NOW + 5.0, NOW - 1200.0),
        (4, 9, "flag", 1, Some("POST /api/0/pungi/pull-request/5/flag: 503"), NOW + 30.0, NOW - 800.0),
    ];
    for (id, run, kind, attempts, last_error, due, created) in tasks {
        db.execute(
            "INSERT INTO tasks (id, run, kind, attempts, last_error, due, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            vals![id, run, kind, attempts, last_error, due, created],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO pull_requests (project, pr, title, author, updated) VALUES (?1, ?2, ?3, ?4, ?5)",
        vals!["pungi", 5u64, "<script>alert(1)</script>", "\"><b>x", NOW - 3000.0],
    )
    .unwrap();
    db.execute("INSERT INTO approvals (project, pr, by_user, at) VALUES (?1, ?2, ?3, ?4)", vals!["pungi", 9u64, "alice", NOW - 1250.0]).unwrap();
}

fn site(cfg: Config) -> Site {
    Site::new(Arc::new(cfg))
}

/// Everything the pages and the API read, as JSON (lists sorted: SQL gives
/// groups in no set order).
fn answers(site: &Site, db: &Conn) -> Value {
    let mut ended = Vec::new();
    for project in ["pungi", "rpms/python-foo"] {
        let mut runs = read::ended_since(db, project, NOW - 50.0 * DAY).unwrap();
        runs.sort_by(|a, b| a.finished.total_cmp(&b.finished));
        ended.extend(runs.into_iter().map(|e| json!([project, e.finished, e.started, e.kind, e.result])));
    }
    let mut open = read::open_runs_by_state(db).unwrap();
    open.sort();
    let mut done = read::done_runs_by_project(db).unwrap();
    done.sort();
    let mut pending = read::pending_tasks_by_kind(db).unwrap();
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "projects": api::projects(site, db).unwrap(),
        "runs": api::runs(site, db, "pungi", None, Some(3)).unwrap(),
        "older runs": api::runs(site, db, "pungi", Some(6), Some(3)).unwrap(),
        "pr 5": api::pull_request(site, db, "pungi", 5).unwrap(),
        "pr 9": api::pull_request(site, db, "pungi", 9).unwrap(),
        "no such pr": api::pull_request(site, db, "pungi", 404).unwrap(),
        "ended": ended,
        "open": open,
        "done": done,
        "pending": pending,
        "tasks in the store": db.value::<i64>("SELECT count(*) FROM tasks", &[]).unwrap(),
    })
}

fn ids(runs: &Value) -> Vec<i64> {
    runs.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// What the fixture must give, whichever store holds it.
fn check(a: &Value) {
    let projects = &a["projects"]["projects"];
    assert_eq!(projects[0]["project"], "pungi");
    assert_eq!(projects[0]["counts"], json!({"waiting_for_approval": 1, "starting": 1, "queued": 1, "running": 1, "retrying": 2}));
    assert_eq!(projects[1]["counts"], json!({"waiting_for_approval": 0, "starting": 0, "queued": 0, "running": 0, "retrying": 0}));
    assert_eq!(ids(&a["runs"]["runs"]), [9, 7, 6]);
    assert_eq!(a["runs"]["next"], "/api/v1/runs?project=pungi&before=6&limit=3");
    assert_eq!(ids(&a["older runs"]["runs"]), [5, 4, 3]);
    let pr5 = &a["pr 5"];
    assert_eq!(ids(&pr5["runs"]), [9, 3, 2, 1]);
    assert_eq!((pr5["title"].as_str(), pr5["author"].as_str()), (Some("<script>alert(1)</script>"), Some("\"><b>x")));
    assert_eq!(pr5["approved_by"], Value::Null);
    let statuses: Vec<&str> = pr5["runs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["passed", "running", "superseded", "passed"]);
    assert_eq!(pr5["runs"][2]["superseded_by"], 3, "the run of the same job that came next");
    assert_eq!((&pr5["runs"][0]["retry"]["kind"], &pr5["runs"][0]["retry"]["attempts"]), (&json!("flag"), &json!(1)));
    assert_eq!(pr5["runs"][3]["links"]["pagure"], Value::Null, "a javascript: link is dropped");
    assert_eq!(pr5["runs"][3]["duration"], 100.0);
    assert_eq!((&a["pr 9"]["approved_by"], &a["pr 9"]["approved_at"]), (&json!("alice"), &json!(NOW - 1250.0)));
    assert_eq!(a["pr 9"]["runs"][0]["status"], "queued");
    assert_eq!(a["no such pr"]["runs"], json!([]));
    assert_eq!(
        a["ended"],
        json!([
            ["pungi", NOW - 2800.0, NOW - 2900.0, "finished", "SUCCESS"],
            ["pungi", NOW - 2000.0, null, "superseded", null],
            ["pungi", NOW - 800.0, NOW - 900.0, "finished", "SUCCESS"],
            ["rpms/python-foo", NOW - 40.0 * DAY + 600.0, NOW - 40.0 * DAY + 60.0, "finished", "FAILURE"],
        ])
    );
    assert_eq!(a["open"], json!([["pungi", "gated", 1], ["pungi", "queued", 1], ["pungi", "running", 1], ["pungi", "triggering", 2]]));
    assert_eq!(a["done"], json!([["pungi", 3], ["rpms/python-foo", 1]]));
    assert_eq!(a["pending"], json!([["flag", 1, NOW - 800.0], ["follow", 1, NOW - 1200.0], ["trigger", 2, NOW - 1400.0]]));
    assert_eq!(a["tasks in the store"], 4);
}

/// The HTML pages: drawn, bus text escaped, secrets hidden.
fn check_pages(site: &Site, db: &Conn) {
    let index = pages::index(site, db, NOW).unwrap();
    let pr5 = pages::pull_request(site, db, "pungi", 5, NOW).unwrap();
    let pr7 = pages::pull_request(site, db, "pungi", 7, NOW).unwrap();
    let older = pages::project(site, db, "pungi", Some(6), NOW).unwrap();
    for page in [&index, &pr5, &pr7, &older] {
        assert!(!page.contains("<script") && !page.contains("<b>x") && !page.contains("javascript:"), "{page}");
        assert!(!page.contains("BEEFCAFE") && !page.contains("PAGURE-SECRET"), "{page}");
    }
    assert!(index.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{index}");
    assert!(index.contains("retrying"), "{index}");
    assert!(pr5.contains("Superseded by a newer build (run 3, commit bbbb222"), "{pr5}");
    assert!(pr7.contains("token *** refused"), "{pr7}");
    // Runs 5 to 1: PR 7 down to PR 5, not PR 9 (run 7). Links are escaped, `/` too.
    assert!(older.contains("pull-request&#x2f;7") && !older.contains("pull-request&#x2f;9"), "{older}");
    let metrics = crate::web::metrics::scrape(db, NOW).unwrap();
    assert!(metrics.contains("poormanci_tasks_pending{kind=\"trigger\"} 2"), "{metrics}");
    assert!(metrics.contains("poormanci_task_oldest_age_seconds{kind=\"trigger\"} 1400"), "{metrics}");
    assert!(metrics.contains("poormanci_runs{project=\"pungi\",state=\"triggering\"} 2"), "{metrics}");
}

fn sqlite() -> Conn {
    let db = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
    fill(&db);
    db
}

#[test]
fn pages_read_a_sqlite_store() {
    let site = site(crate::testing::config());
    let db = sqlite();
    check(&answers(&site, &db));
    check_pages(&site, &db);
}

/// A schema of the test's own in the test database, dropped when done.
struct Schema {
    name: String,
    admin: Conn,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = self.admin.batch(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

#[test]
fn pages_read_a_postgresql_store_as_they_read_sqlite() {
    let Ok(dsn) = std::env::var("POORMANCI_TEST_PG_DSN") else {
        eprintln!("pages_read_a_postgresql_store_as_they_read_sqlite: skipped: POORMANCI_TEST_PG_DSN is not set");
        return;
    };
    let password_file = std::env::var_os("POORMANCI_TEST_PG_PASSWORD_FILE").map(PathBuf::from);
    let admin = db::connect_postgres(&PostgresConfig { dsn: dsn.clone(), password_file: password_file.clone() }, "poormanci-test").unwrap();
    let schema = Schema { name: format!("poormanci_web_test_{}", std::process::id()), admin };
    schema.admin.batch(&format!("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}", schema.name)).unwrap();
    let store = PostgresConfig { dsn: format!("{dsn} options='-c search_path={}'", schema.name), password_file };
    let pg = db::connect_postgres(&store, "poormanci-test").unwrap();
    fill(&pg);

    let mut cfg = crate::testing::config();
    cfg.store.postgresql = Some(store);
    cfg.web.listen = Some("127.0.0.1:0".parse().unwrap());
    let site = site(cfg.clone());
    let on_postgres = answers(&site, &pg);
    check(&on_postgres);
    assert_eq!(on_postgres, answers(&site, &sqlite()), "the same answers from both stores");
    check_pages(&site, &pg);

    // Served: the pool's read-only connections come from the config, and
    // the synchronous client runs on the server's blocking threads.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = crate::web::start(&rt, Arc::new(cfg)).unwrap().unwrap();
    let get = |path: &str| {
        rt.block_on(async {
            let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let (status, api_pr) = get("/api/v1/pungi/pull-request/5");
    assert_eq!(status, 200, "{api_pr}");
    assert_eq!(serde_json::from_str::<Value>(&api_pr).unwrap(), on_postgres["pr 5"]);
    let (status, api_runs) = get("/api/v1/runs?project=pungi&limit=3");
    assert_eq!((status, serde_json::from_str::<Value>(&api_runs).unwrap()), (200, on_postgres["runs"].clone()));
    for path in ["/", "/pungi/runs", "/pungi/pull-request/5", "/api/v1/projects"] {
        let (status, body) = get(path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("poormanci_runs{project=\"pungi\",state=\"gated\"} 1"), "{metrics}");
    let (_, health) = get("/healthz");
    assert!(!health.contains("state store: cannot read"), "{health}");
    rt.shutdown_timeout(std::time::Duration::from_secs(5));

    // The pages' connections may read, never write.
    let reader = read::Db::new(&site.cfg);
    let refused = reader.with(|db| db.execute("DELETE FROM tasks", &[])).unwrap_err();
    assert!(refused.contains("read-only transaction"), "{refused}");
    // A pool with a connection in it, dropped where the server's is: on a
    // runtime's thread, where the client may not close itself.
    assert_eq!(reader.with(|db| db.value::<i64>("SELECT count(*) FROM runs", &[])), Ok(Some(9)));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async move { drop(reader) });
    assert_eq!(pg.value::<i64>("SELECT count(*) FROM tasks", &[]).unwrap(), Some(4));
}
