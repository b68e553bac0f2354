//! The pages' queries, on read-only connections of their own: to the SQLite
//! file (WAL: a reader never waits for the engine's writes, nor holds them
//! up), or to the PostgreSQL database the instances share. Every query is
//! served by an index, so a page costs the same with 50 000 runs as with 50,
//! and is written once, in SQL both databases understand.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Config, PostgresConfig};
use crate::db::{self, vals, Conn, Row};
use crate::work::RunState;

/// Connections kept open between requests.
const POOL: usize = 4;

/// What a page's PostgreSQL connection may do: read, and not for long (a
/// page never holds up the engines, and never piles up threads behind a lock).
const POSTGRES_READER: &str = "SET default_transaction_read_only = on; SET statement_timeout = '5s'";

enum Source {
    Sqlite(PathBuf),
    Postgres(PostgresConfig),
}

pub struct Db {
    source: Source,
    pool: Mutex<Vec<Conn>>,
}

impl Db {
    /// The store `poormanci.store` names: SQLite in state_dir, or PostgreSQL.
    pub fn new(cfg: &Config) -> Db {
        let source = match &cfg.store.postgresql {
            Some(pg) => Source::Postgres(pg.clone()),
            None => Source::Sqlite(cfg.state_dir.join("poormanci.sqlite3")),
        };
        Db { source, pool: Mutex::new(Vec::new()) }
    }

    fn open(&self) -> db::Result<Conn> {
        match &self.source {
            Source::Sqlite(path) => {
                let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
                db.busy_timeout(Duration::from_secs(2))?;
                Ok(Conn::Sqlite(db))
            }
            Source::Postgres(cfg) => {
                let db = db::connect_postgres(cfg, "poormanci-web")?;
                db.batch(POSTGRES_READER)?;
                Ok(db)
            }
        }
    }

    /// Run `f` on a pooled connection (blocking: call from a blocking thread,
    /// never from async code: the PostgreSQL client runs a runtime of its own).
    pub fn with<T>(&self, f: impl FnOnce(&Conn) -> db::Result<T>) -> Result<T, String> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let db = match pooled {
            Some(db) => db,
            None => self.open().map_err(|e| format!("cannot read the state store: {e}"))?,
        };
        let result = f(&db).map_err(|e| format!("cannot read the state store: {e}"));
        if result.is_ok() {
            if let Ok(mut pool) = self.pool.lock() {
                if pool.len() < POOL {
                    pool.push(db);
                }
            }
        }
        result
    }
}

impl Drop for Db {
    /// A PostgreSQL client closes by running a runtime of its own, which
    /// panics on a thread of the server's runtime, where the server (and
    /// this pool) is dropped when the runtime stops: close them on their own thread.
    fn drop(&mut self) {
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        if tokio::runtime::Handle::try_current().is_ok() && pool.iter().any(|db| db.backend() == db::Backend::Postgresql) {
            let _ = std::thread::Builder::new().name("poormanci-web-close".into()).spawn(move || drop(pool));
        }
    }
}

/// A run as stored, with its PR's title and author.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub project: String,
    pub pr: u64,
    pub title: Option<String>,
    pub author: Option<String>,
    pub job: String,
    pub commit: Option<String>,
    #[serde(skip)]
    pub pr_url: String,
    pub queue_item: Option<u64>,
    pub build: Option<u64>,
    #[serde(skip)]
    pub build_url: Option<String>,
    /// gated, triggering, queued, running, done
    pub state: String,
    pub outcome: Option<Value>,
    pub reason: Option<String>,
    pub queued_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

const RUN_SELECT: &str = "SELECT r.id, r.project, r.pr, p.title, p.author, r.job, r.commit_id, r.pr_url, r.queue_id, r.build, r.build_url,
    r.state, r.outcome, r.reason, r.created, r.started, r.finished
    FROM runs r LEFT JOIN pull_requests p ON p.project = r.project AND p.pr = r.pr";

fn run_from(r: &Row) -> db::Result<RunRow> {
    let outcome: Option<String> = r.get(12)?;
    Ok(RunRow {
        id: r.get(0)?,
        project: r.get(1)?,
        pr: r.get(2)?,
        title: r.get(3)?,
        author: r.get(4)?,
        job: r.get(5)?,
        commit: r.get(6)?,
        pr_url: r.get(7)?,
        queue_item: r.get(8)?,
        build: r.get(9)?,
        build_url: r.get(10)?,
        state: r.get(11)?,
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        reason: r.get(13)?,
        queued_at: r.get(14)?,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
    })
}

/// The newest runs of a project, older than run `before` when given.
pub fn recent_runs(db: &Conn, project: &str, before: Option<i64>, limit: usize) -> db::Result<Vec<RunRow>> {
    let sql = format!("{RUN_SELECT} WHERE r.project = ?1 AND r.id < ?2 ORDER BY r.id DESC LIMIT ?3");
    db.query(&sql, vals![project, before.unwrap_or(i64::MAX), limit])?.iter().map(run_from).collect()
}

/// Every run of a PR, newest first (at most `limit`).
pub fn runs_of_pr(db: &Conn, project: &str, pr: u64, limit: usize) -> db::Result<Vec<RunRow>> {
    let sql = format!("{RUN_SELECT} WHERE r.project = ?1 AND r.pr = ?2 ORDER BY r.id DESC LIMIT ?3");
    db.query(&sql, vals![project, pr, limit])?.iter().map(run_from).collect()
}

/// A request still to make for a run.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub kind: String,
    /// Failed tries so far (for a follow: polls).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_try: f64,
}

/// The pending tasks of these runs, by run, oldest first.
pub fn tasks_of(db: &Conn, runs: impl IntoIterator<Item = i64>) -> db::Result<HashMap<i64, Vec<TaskRow>>> {
    let runs: std::collections::HashSet<i64> = runs.into_iter().collect();
    let (Some(first), Some(last)) = (runs.iter().min(), runs.iter().max()) else { return Ok(HashMap::new()) };
    // One query for the page, not one per run (a round trip each on
    // PostgreSQL): tasks are only the work still pending, so the few of
    // other runs in the range cost nothing to skip.
    let rows = db.query("SELECT run, kind, attempts, last_error, due FROM tasks WHERE run BETWEEN ?1 AND ?2 ORDER BY id", vals![*first, *last])?;
    let mut out: HashMap<i64, Vec<TaskRow>> = HashMap::new();
    for r in rows {
        let run: i64 = r.get(0)?;
        if runs.contains(&run) {
            out.entry(run).or_default().push(TaskRow { kind: r.get(1)?, attempts: r.get(2)?, last_error: r.get(3)?, next_try: r.get(4)? });
        }
    }
    Ok(out)
}

/// The run of the same PR and job that came after this one: what superseded it.
pub fn next_run(db: &Conn, run: &RunRow) -> db::Result<Option<(i64, Option<String>)>> {
    let row = db.query_opt(
        "SELECT id, commit_id FROM runs WHERE project = ?1 AND pr = ?2 AND job = ?3 AND id > ?4 ORDER BY id LIMIT 1",
        vals![&run.project, run.pr, &run.job, run.id],
    )?;
    row.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
}

/// Who approved the PR with `/ok-to-test`, and when.
pub fn approval(db: &Conn, project: &str, pr: u64) -> db::Result<Option<(String, f64)>> {
    let row = db.query_opt("SELECT by_user, at FROM approvals WHERE project = ?1 AND pr = ?2", vals![project, pr])?;
    row.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
}

/// How many of a project's runs wait, and how.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Gated: waiting for a trusted person's `/ok-to-test`.
    pub waiting_for_approval: i64,
    /// Recorded, trigger not yet taken by Jenkins (and not failing: those are `retrying`).
    pub starting: i64,
    pub queued: i64,
    pub running: i64,
    /// Runs with a request that failed and will be tried again.
    pub retrying: i64,
}

pub fn counts(db: &Conn) -> db::Result<BTreeMap<String, Counts>> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for (project, state, n) in open_runs_by_state(db)? {
        let c = out.entry(project).or_default();
        match RunState::parse(&state) {
            Some(RunState::Gated) => c.waiting_for_approval += n,
            Some(RunState::Triggering) => c.starting += n,
            Some(RunState::Queued) => c.queued += n,
            Some(RunState::Running) => c.running += n,
            Some(RunState::Done) | None => {}
        }
    }
    // Follows count their polls as attempts: polling is not retrying.
    // `id IN (tasks)`: the tasks (a few) drive the loop, each run found by
    // its key, never a scan of the runs (thousands).
    let rows = db.query(
        "SELECT r.project, count(*) FROM runs r
         WHERE r.id IN (SELECT t.run FROM tasks t WHERE t.attempts > 0 AND t.kind != 'follow') GROUP BY r.project",
        &[],
    )?;
    for r in rows {
        out.entry(r.get(0)?).or_default().retrying = r.get(1)?;
    }
    // A run whose trigger is being retried is shown as retrying, not as starting.
    let rows = db.query(
        "SELECT r.project, count(*) FROM runs r
         WHERE r.id IN (SELECT t.run FROM tasks t WHERE t.attempts > 0 AND t.kind = 'trigger') AND r.state = 'triggering' GROUP BY r.project",
        &[],
    )?;
    for r in rows {
        let c = out.entry(r.get(0)?).or_default();
        c.starting = (c.starting - r.get::<i64>(1)?).max(0);
    }
    Ok(out)
}

/// A finished run, for the charts: when it ended, how long it ran, how it ended.
pub struct Ended {
    pub finished: f64,
    pub started: Option<f64>,
    /// The outcome's kind (finished, superseded, …) and Jenkins' result.
    pub kind: Option<String>,
    pub result: Option<String>,
}

/// The two fields of an outcome the charts need; the others are skipped unread.
#[derive(Deserialize)]
struct OutcomeWords {
    kind: Option<String>,
    result: Option<String>,
}

pub fn ended_since(db: &Conn, project: &str, since: f64) -> db::Result<Vec<Ended>> {
    // The outcome is read here, not by the database: SQLite and PostgreSQL
    // share no JSON function, and two fields cost about as much either way.
    let rows = db.query("SELECT finished, started, outcome FROM runs WHERE project = ?1 AND state = 'done' AND finished >= ?2", vals![project, since])?;
    rows.iter()
        .map(|r| {
            let outcome: Option<String> = r.get(2)?;
            let words = outcome.and_then(|o| serde_json::from_str::<OutcomeWords>(&o).ok());
            let (kind, result) = words.map_or((None, None), |w| (w.kind, w.result));
            Ok(Ended { finished: r.get(0)?, started: r.get(1)?, kind, result })
        })
        .collect()
}

/// (kind, tasks, when the oldest was recorded) of the pending tasks, for `/metrics`.
pub fn pending_tasks_by_kind(db: &Conn) -> db::Result<Vec<(String, i64, Option<f64>)>> {
    let rows = db.query("SELECT kind, count(*), min(created) FROM tasks GROUP BY kind", &[])?;
    rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).collect()
}

/// (project, state, runs) of the runs not finished, for `/metrics`.
pub fn open_runs_by_state(db: &Conn) -> db::Result<Vec<(String, String, i64)>> {
    let rows = db.query("SELECT project, state, count(*) FROM runs WHERE state != 'done' GROUP BY project, state", &[])?;
    rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).collect()
}

/// (project, finished runs kept): counts every row of the history (a few ms at 50 000).
pub fn done_runs_by_project(db: &Conn) -> db::Result<Vec<(String, i64)>> {
    let rows = db.query("SELECT project, count(*) FROM runs WHERE state = 'done' GROUP BY project", &[])?;
    rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::Work;

    /// The queries above name run states and task kinds in SQL text: they
    /// must be the words the engine stores.
    #[test]
    fn the_sql_words_are_the_engines() {
        for state in [RunState::Gated, RunState::Triggering, RunState::Queued, RunState::Running, RunState::Done] {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        assert_eq!(RunState::Done.as_str(), "done");
        assert_eq!(RunState::Triggering.as_str(), "triggering");
        assert_eq!((Work::FOLLOW, Work::TRIGGER), ("follow", "trigger"));
        assert_eq!(Work::Trigger.kind(), "trigger");
        assert_eq!(Work::Follow { polls: 0 }.kind(), "follow");
    }
}
