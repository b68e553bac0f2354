//! The pages' queries, on read-only connections of their own (WAL: a reader
//! never waits for the engine's writes, nor holds them up). Every query is
//! served by an index, so a page costs the same with 50 000 runs as with 50.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Row};
use serde::Serialize;
use serde_json::Value;

use crate::work::RunState;

/// Connections kept open between requests.
const POOL: usize = 4;

pub struct Db {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl Db {
    pub fn new(state_dir: &Path) -> Db {
        Db { path: state_dir.join("poormanci.sqlite3"), pool: Mutex::new(Vec::new()) }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let db = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        db.busy_timeout(Duration::from_secs(2))?;
        Ok(db)
    }

    /// Run `f` on a pooled connection (blocking: call from a blocking thread).
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
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

fn run_from(r: &Row) -> rusqlite::Result<RunRow> {
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
pub fn recent_runs(db: &Connection, project: &str, before: Option<i64>, limit: usize) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = db.prepare_cached(&format!("{RUN_SELECT} WHERE r.project = ?1 AND r.id < ?2 ORDER BY r.id DESC LIMIT ?3"))?;
    let rows = stmt.query_map(params![project, before.unwrap_or(i64::MAX), limit as i64], run_from)?;
    rows.collect()
}

/// Every run of a PR, newest first (at most `limit`).
pub fn runs_of_pr(db: &Connection, project: &str, pr: u64, limit: usize) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = db.prepare_cached(&format!("{RUN_SELECT} WHERE r.project = ?1 AND r.pr = ?2 ORDER BY r.id DESC LIMIT ?3"))?;
    let rows = stmt.query_map(params![project, pr, limit as i64], run_from)?;
    rows.collect()
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

pub fn tasks_of(db: &Connection, runs: impl IntoIterator<Item = i64>) -> rusqlite::Result<HashMap<i64, Vec<TaskRow>>> {
    let mut stmt = db.prepare_cached("SELECT kind, attempts, last_error, due FROM tasks WHERE run = ?1 ORDER BY id")?;
    let mut out = HashMap::new();
    for run in runs {
        let tasks = stmt
            .query_map([run], |r| Ok(TaskRow { kind: r.get(0)?, attempts: r.get(1)?, last_error: r.get(2)?, next_try: r.get(3)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if !tasks.is_empty() {
            out.insert(run, tasks);
        }
    }
    Ok(out)
}

/// The run of the same PR and job that came after this one: what superseded it.
pub fn next_run(db: &Connection, run: &RunRow) -> rusqlite::Result<Option<(i64, Option<String>)>> {
    let mut stmt =
        db.prepare_cached("SELECT id, commit_id FROM runs WHERE project = ?1 AND pr = ?2 AND job = ?3 AND id > ?4 ORDER BY id LIMIT 1")?;
    let mut rows = stmt.query_map(params![run.project, run.pr, run.job, run.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.next().transpose()
}

/// Who approved the PR with `/ok-to-test`, and when.
pub fn approval(db: &Connection, project: &str, pr: u64) -> rusqlite::Result<Option<(String, f64)>> {
    let mut stmt = db.prepare_cached("SELECT by_user, at FROM approvals WHERE project = ?1 AND pr = ?2")?;
    let mut rows = stmt.query_map(params![project, pr], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.next().transpose()
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

pub fn counts(db: &Connection) -> rusqlite::Result<BTreeMap<String, Counts>> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    let mut stmt = db.prepare_cached("SELECT project, state, count(*) FROM runs WHERE state != 'done' GROUP BY project, state")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))? {
        let (project, state, n) = row?;
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
    // CROSS JOIN: tasks (a few) drive the loop, never the runs (thousands).
    let mut stmt = db.prepare_cached(
        "SELECT r.project, count(DISTINCT r.id) FROM tasks t CROSS JOIN runs r ON r.id = t.run
         WHERE t.attempts > 0 AND t.kind != 'follow' GROUP BY r.project",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (project, n) = row?;
        out.entry(project).or_default().retrying = n;
    }
    // A run whose trigger is being retried is shown as retrying, not as starting.
    let mut stmt = db.prepare_cached(
        "SELECT r.project, count(DISTINCT r.id) FROM tasks t CROSS JOIN runs r ON r.id = t.run
         WHERE t.attempts > 0 AND t.kind = 'trigger' AND r.state = 'triggering' GROUP BY r.project",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (project, n) = row?;
        let c = out.entry(project).or_default();
        c.starting = (c.starting - n).max(0);
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

pub fn ended_since(db: &Connection, project: &str, since: f64) -> rusqlite::Result<Vec<Ended>> {
    // Two fields read by SQLite: parsing thousands of outcomes here would cost more.
    let mut stmt = db.prepare_cached(
        "SELECT finished, started, json_extract(outcome, '$.kind'), json_extract(outcome, '$.result')
         FROM runs WHERE project = ?1 AND state = 'done' AND finished >= ?2",
    )?;
    let rows = stmt.query_map(params![project, since], |r| Ok(Ended { finished: r.get(0)?, started: r.get(1)?, kind: r.get(2)?, result: r.get(3)? }))?;
    rows.collect()
}

/// (project, state, runs) of the runs not finished, for `/metrics`.
pub fn open_runs_by_state(db: &Connection) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let mut stmt = db.prepare_cached("SELECT project, state, count(*) FROM runs WHERE state != 'done' GROUP BY project, state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// (project, finished runs kept): counts every row of the history (a few ms at 50 000).
pub fn done_runs_by_project(db: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = db.prepare_cached("SELECT project, count(*) FROM runs WHERE state = 'done' GROUP BY project")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
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
