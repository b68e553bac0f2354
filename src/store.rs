//! What must survive a restart, in SQLite (`<state_dir>/poormanci.sqlite3`):
//! runs (one build of one job for one PR commit), tasks (every outgoing
//! request, recorded before it is tried and deleted once it succeeded) and
//! the msg_ids already seen. Only the engine thread writes.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};
use serde_json::{json, Value};

use crate::policy::{History, RunSpec};
pub use crate::work::RunState;
use crate::work::Work;

/// How long finished runs and seen msg_ids are kept (dedupe memory).
const KEEP_SECS: f64 = 30.0 * 86400.0;
/// At most this many seen msg_ids are kept.
const KEEP_SEEN: i64 = 100_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seen (msg_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL, pr INTEGER NOT NULL, job TEXT NOT NULL, commit_id TEXT,
    repo TEXT NOT NULL, branch TEXT NOT NULL, branch_to TEXT NOT NULL, pr_url TEXT NOT NULL,
    queue_id INTEGER, build INTEGER, build_url TEXT,
    state TEXT NOT NULL DEFAULT 'triggering',  -- RunState
    outcome TEXT,
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS runs_pr ON runs(project, pr, job);
CREATE INDEX IF NOT EXISTS runs_build ON runs(job, build);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    kind TEXT NOT NULL,        -- Work's tag
    payload TEXT NOT NULL,     -- Work's other fields, JSON
    due REAL NOT NULL,
    deadline REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks(due);
CREATE TABLE IF NOT EXISTS approvals (
    project TEXT NOT NULL, pr INTEGER NOT NULL, by_user TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (project, pr)
);
";

/// A run as recorded: what was asked for (its `RunSpec`, read through
/// `Deref`: `run.project`, `run.job`, …) and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: i64,
    pub spec: RunSpec,
    pub queue_id: Option<u64>,
    pub build: Option<u64>,
    pub build_url: Option<String>,
    pub state: RunState,
    pub created: f64,
    pub started: Option<f64>,
    /// The uid of its PR flag: recorded with the run (a run recorded by
    /// release 0.1.0 has none and keeps that release's uid).
    pub flag_uid: String,
}

impl std::ops::Deref for Run {
    type Target = RunSpec;
    fn deref(&self) -> &RunSpec {
        &self.spec
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: i64,
    pub run: i64,
    pub work: Work,
    pub due: f64,
    pub deadline: f64,
    pub attempts: u32,
    /// Refused for authorization (401, 403): kept until the token works.
    pub waiting_for_token: bool,
}

pub struct Store {
    db: Connection,
}

pub type Result<T> = rusqlite::Result<T>;

const RUN_COLUMNS: &str =
    "id, project, pr, job, commit_id, repo, branch, branch_to, pr_url, queue_id, build, build_url, state, created, started, flag_uid";

/// Columns added since release 0.1.0, added to an older store when opened.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[("runs", "flag_uid", "TEXT"), ("tasks", "held", "TEXT")];

const TASK_COLUMNS: &str = "id, run, kind, payload, due, deadline, attempts, held";
/// `tasks.held` of a task Pagure refused for authorization, kept for a working token.
const HELD_FOR_TOKEN: &str = "token";

fn run_from(r: &Row) -> Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        spec: RunSpec {
            project: r.get(1)?,
            pr: r.get(2)?,
            job: r.get(3)?,
            commit: r.get(4)?,
            repo: r.get(5)?,
            // Columns named as in 0.1.0: branch is the source, branch_to the target.
            source_branch: r.get(6)?,
            target_branch: r.get(7)?,
            pr_url: r.get(8)?,
        },
        queue_id: r.get(9)?,
        build: r.get(10)?,
        build_url: r.get(11)?,
        state: r.get(12)?,
        created: r.get(13)?,
        started: r.get(14)?,
        flag_uid: match r.get::<_, Option<String>>(15)? {
            Some(uid) => uid,
            None => crate::policy::legacy_flag_uid(&r.get::<_, String>(3)?),
        },
    })
}

fn task_from(r: &Row) -> Result<Task> {
    let (kind, payload): (String, String) = (r.get(2)?, r.get(3)?);
    let work = Work::from_row(&kind, &payload)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into()))?;
    Ok(Task {
        id: r.get(0)?,
        run: r.get(1)?,
        work,
        due: r.get(4)?,
        deadline: r.get(5)?,
        attempts: r.get(6)?,
        waiting_for_token: r.get::<_, Option<String>>(7)?.as_deref() == Some(HELD_FOR_TOKEN),
    })
}

/// The store's file in state_dir; SQLite adds `-wal` and `-shm` next to it.
pub const FILE: &str = "poormanci.sqlite3";

/// Create state_dir, 0700 (it holds tokens' work and PR data), when it does
/// not exist; one that exists is left as the operator made it.
fn create_state_dir(dir: &Path) -> std::result::Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    let failed = |e: std::io::Error| format!("cannot create state_dir {}: {e}", dir.display());
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(failed)?;
    // The umask only takes bits away, possibly ours: set the mode exactly.
    std::fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(failed)
}

/// Open (create) a file readable by its owner only, whatever the umask,
/// tightening one an older version made 0644.
fn private_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    file.set_permissions(Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Hold state_dir for one poormanci: the lock is released when the file is
/// dropped (or the process ends).
pub fn lock(dir: &Path) -> std::result::Result<File, String> {
    create_state_dir(dir)?;
    let path = dir.join("lock");
    let file = private_file(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.try_lock().map_err(|_| {
        format!("state_dir {} is in use by another poormanci (a running hub?); stop it or use another state_dir", dir.display())
    })?;
    Ok(file)
}

/// Why a store file could not be used.
enum OpenError {
    /// Not a database, or failing its check: set it aside and start afresh.
    Damaged(String),
    /// Anything else (permissions, disk): the file may be fine; leave it be.
    Unusable(String),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> OpenError {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::Damaged(e.to_string()),
            _ => OpenError::Unusable(e.to_string()),
        }
    }
}

/// `<path><suffix>`: SQLite's names for a database's WAL and shared memory.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Rename a damaged store, its WAL and SHM to `<file>.damaged-<UTC time>`
/// (and `-wal`, `-shm`: SQLite opens the kept copy with its WAL as it was).
fn set_aside(path: &Path) -> std::result::Result<PathBuf, String> {
    let when: String = Connection::open_in_memory()
        .and_then(|c| c.query_row("SELECT strftime('%Y%m%dT%H%M%fZ', 'now')", [], |r| r.get(0)))
        .map_err(|e| format!("cannot read the time: {e}"))?;
    let aside = with_suffix(path, &format!(".damaged-{when}"));
    for suffix in ["", "-wal", "-shm"] {
        let (from, to) = (with_suffix(path, suffix), with_suffix(&aside, suffix));
        if suffix.is_empty() || from.exists() {
            std::fs::rename(&from, &to).map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))?;
        }
    }
    Ok(aside)
}

impl Store {
    /// The store in `dir`, made if new. A damaged one (not a database, or
    /// failing `PRAGMA quick_check`) is kept aside and replaced by an empty
    /// one, with one ERROR line: poormanci keeps working for new messages.
    pub fn open(dir: &Path) -> std::result::Result<Store, String> {
        create_state_dir(dir)?;
        let path = dir.join(FILE);
        let unusable = |e: &dyn std::fmt::Display| format!("cannot use {}: {e}", path.display());
        let why = match Self::open_checked(&path) {
            Ok(store) => return Ok(store),
            Err((OpenError::Unusable(e), _)) => return Err(unusable(&e)),
            Err((OpenError::Damaged(why), db)) => {
                // Renamed while SQLite still has the files open: closing then
                // cannot fold the WAL into, or delete it from, the new store.
                let aside = set_aside(&path);
                drop(db);
                let aside = aside.map_err(|e| format!("state store {} is damaged ({why}) and {e}", path.display()))?;
                error!(
                    "state store {} is damaged ({why}); kept aside as {} and started afresh: work it held (builds being followed, reports not sent) is not done",
                    path.display(),
                    aside.display()
                );
                why
            }
        };
        Self::open_checked(&path).map_err(|(e, _)| match e {
            OpenError::Damaged(e) | OpenError::Unusable(e) => format!("{} (after setting aside a damaged one: {why})", unusable(&e)),
        })
    }

    /// The store, or why not (with the connection, still open, when it is damaged).
    fn open_checked(path: &Path) -> std::result::Result<Store, (OpenError, Option<Connection>)> {
        // Made 0600 before SQLite opens it: SQLite gives the WAL and SHM the
        // database file's mode.
        for suffix in ["", "-wal", "-shm"] {
            let file = with_suffix(path, suffix);
            if suffix.is_empty() || file.exists() {
                private_file(&file).map_err(|e| (OpenError::Unusable(format!("{}: {e}", file.display())), None))?;
            }
        }
        let db = Connection::open(path).map_err(|e| (e.into(), None))?;
        let checked = Self::setup(&db).and_then(|()| {
            // The first problem is enough to say it is damaged.
            let check: String = db.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
            Ok(check)
        });
        match checked {
            Ok(check) if check == "ok" => Ok(Store { db }),
            Ok(check) => Err((OpenError::Damaged(format!("quick_check: {}", crate::http::one_line(&check, 200))), Some(db))),
            Err(e) => Err((e.into(), Some(db))),
        }
    }

    pub fn open_read_only(dir: &Path) -> Result<Store> {
        let db = Connection::open_with_flags(dir.join("poormanci.sqlite3"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store { db })
    }

    /// A store that forgets everything when dropped (dry runs, tests).
    pub fn open_in_memory() -> Store {
        let db = Connection::open_in_memory().expect("SQLite in memory");
        Self::setup(&db).expect("SQLite schema");
        Store { db }
    }

    fn setup(db: &Connection) -> Result<()> {
        // WAL + NORMAL: a commit survives the process being killed (not a
        // power cut), at a fraction of the cost of FULL.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        for (table, column, kind) in ADDED_COLUMNS {
            let exists = db.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])?;
            if !exists {
                db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
            }
        }
        crate::web::history::migrate(db)
    }

    /// The engine's connection, for the status page's own records (crate::web::history).
    pub(crate) fn conn(&self) -> &Connection {
        &self.db
    }

    pub fn begin(&self) -> Result<()> {
        self.db.execute_batch("BEGIN IMMEDIATE")
    }

    pub fn commit(&self) -> Result<()> {
        self.db.execute_batch("COMMIT")
    }

    pub fn rollback(&self) -> Result<()> {
        self.db.execute_batch("ROLLBACK")
    }

    /// Record a msg_id; false when it was already seen.
    pub fn first_sight(&self, msg_id: &str, now: f64) -> Result<bool> {
        Ok(self.db.execute("INSERT OR IGNORE INTO seen (msg_id, at) VALUES (?1, ?2)", params![msg_id, now])? == 1)
    }

    /// A new run, `gated` (waiting for a trusted person) or `triggering`.
    pub fn add_run(&self, spec: &RunSpec, state: RunState, now: f64) -> Result<i64> {
        self.db.execute(
            "INSERT INTO runs (project, pr, job, commit_id, repo, branch, branch_to, pr_url, state, created, flag_uid)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                spec.project,
                spec.pr,
                spec.job,
                spec.commit,
                spec.repo,
                spec.source_branch,
                spec.target_branch,
                spec.pr_url,
                state,
                now,
                crate::policy::flag_uid(&spec.project, spec.pr, &spec.job)
            ],
        )?;
        Ok(self.db.last_insert_rowid())
    }

    pub fn run(&self, id: i64) -> Result<Option<Run>> {
        self.db.query_row(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"), [id], run_from).optional()
    }

    /// Unfinished runs of a PR (every job), oldest first.
    pub fn open_runs_of_pr(&self, project: &str, pr: u64) -> Result<Vec<Run>> {
        let mut stmt = self
            .db
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE project = ?1 AND pr = ?2 AND state != 'done' ORDER BY id"))?;
        let rows = stmt.query_map(params![project, pr], run_from)?;
        rows.collect()
    }

    pub fn latest_run_of_pr(&self, project: &str, pr: u64) -> Result<Option<i64>> {
        self.db.query_row("SELECT max(id) FROM runs WHERE project = ?1 AND pr = ?2", params![project, pr], |r| r.get(0))
    }

    /// A gated run may go: it becomes `triggering`.
    pub fn release(&self, id: i64) -> Result<bool> {
        Ok(self.db.execute("UPDATE runs SET state = 'triggering' WHERE id = ?1 AND state = 'gated'", [id])? == 1)
    }

    pub fn approve(&self, project: &str, pr: u64, by: &str, now: f64) -> Result<()> {
        self.db.execute("INSERT OR IGNORE INTO approvals (project, pr, by_user, at) VALUES (?1, ?2, ?3, ?4)", params![project, pr, by, now])?;
        Ok(())
    }

    pub fn approved(&self, project: &str, pr: u64) -> Result<bool> {
        self.db.prepare_cached("SELECT 1 FROM approvals WHERE project = ?1 AND pr = ?2")?.exists(params![project, pr])
    }

    /// What Pagure says a run builds, where the message said otherwise.
    pub fn set_source(&self, id: i64, repo: &str, source_branch: &str, commit: Option<&str>) -> Result<()> {
        self.db.execute("UPDATE runs SET repo = ?2, branch = ?3, commit_id = ?4 WHERE id = ?1", params![id, repo, source_branch, commit])?;
        Ok(())
    }

    pub fn set_queued(&self, id: i64, queue_id: Option<u64>) -> Result<()> {
        self.db.execute("UPDATE runs SET state = 'queued', queue_id = ?2 WHERE id = ?1 AND state = 'triggering'", params![id, queue_id])?;
        Ok(())
    }

    pub fn set_started(&self, id: i64, build: u64, url: &str, now: f64) -> Result<()> {
        self.db.execute(
            "UPDATE runs SET state = 'running', build = ?2, build_url = ?3, started = ?4 WHERE id = ?1 AND state != 'done'",
            params![id, build, url, now],
        )?;
        Ok(())
    }

    /// Mark a run finished; false when it already was (so only the first
    /// of the bus message and the follow reports).
    pub fn finish(&self, id: i64, outcome: &Value, now: f64) -> Result<bool> {
        let changed = self.db.execute(
            "UPDATE runs SET state = 'done', outcome = ?2, finished = ?3 WHERE id = ?1 AND state != 'done'",
            params![id, outcome.to_string(), now],
        )?;
        if changed == 1 {
            // Nothing left to follow or start; reports, flags and cancels still go.
            self.db.execute("DELETE FROM tasks WHERE run = ?1 AND kind IN (?2, ?3, ?4)", params![id, Work::FOLLOW, Work::LOOKUP, Work::TRIGGER])?;
        }
        Ok(changed == 1)
    }

    /// The newest run of this PR and job.
    pub fn latest_run(&self, project: &str, pr: u64, job: &str) -> Result<Option<i64>> {
        self.db
            .query_row("SELECT max(id) FROM runs WHERE project = ?1 AND pr = ?2 AND job = ?3", params![project, pr, job], |r| r.get(0))
    }

    /// Unfinished runs of these jobs with this build number, or (when
    /// `number` is None) still waiting to learn theirs.
    pub fn open_runs(&self, jobs: &[String], number: Option<u64>) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        let mut stmt = self.db.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = ?1 AND state != 'done' AND build IS ?2 ORDER BY id"
        ))?;
        for job in jobs {
            for run in stmt.query_map(params![job, number], run_from)? {
                out.push(run?);
            }
        }
        Ok(out)
    }

    pub fn add_task(&self, run: i64, work: &Work, due: f64, deadline: f64) -> Result<i64> {
        self.db.execute(
            "INSERT INTO tasks (run, kind, payload, due, deadline, created) VALUES (?1, ?2, ?3, ?4, ?5, unixepoch('subsec'))",
            params![run, work.kind(), work.payload().to_string(), due, deadline],
        )?;
        Ok(self.db.last_insert_rowid())
    }

    pub fn task(&self, id: i64) -> Result<Option<Task>> {
        self.db
            .query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [id], task_from)
            .optional()
    }

    /// Tasks due by `now`, oldest first.
    pub fn due_tasks(&self, now: f64, limit: usize) -> Result<Vec<Task>> {
        let mut stmt = self
            .db
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE due <= ?1 ORDER BY due, id LIMIT ?2"))?;
        let rows = stmt.query_map(params![now, limit as i64], task_from)?;
        rows.collect()
    }

    pub fn next_due(&self) -> Result<Option<f64>> {
        self.db.query_row("SELECT min(due) FROM tasks", [], |r| r.get(0))
    }

    pub fn delete_task(&self, id: i64) -> Result<()> {
        self.db.execute("DELETE FROM tasks WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Try a task again at `due`, keeping the reason it failed.
    pub fn retry_task(&self, id: i64, due: f64, work: &Work, error: Option<&str>) -> Result<()> {
        self.db.execute(
            "UPDATE tasks SET due = ?2, payload = ?3, attempts = attempts + 1, last_error = coalesce(?4, last_error) WHERE id = ?1",
            params![id, due, work.payload().to_string(), error],
        )?;
        Ok(())
    }

    /// Keep a task Pagure refused for authorization until the token works:
    /// tried again at `due` (and sooner by `wake_held`), never given up.
    pub fn hold_for_token(&self, id: i64, due: f64, deadline: f64, error: &str) -> Result<()> {
        self.db.execute(
            "UPDATE tasks SET held = ?2, due = ?3, deadline = ?4, attempts = attempts + 1, last_error = ?5 WHERE id = ?1",
            params![id, HELD_FOR_TOKEN, due, deadline, error],
        )?;
        Ok(())
    }

    /// Tasks kept for a working token are due now (at start, and once
    /// Pagure took a request again); how many.
    pub fn wake_held(&self, now: f64) -> Result<usize> {
        self.db.execute("UPDATE tasks SET due = min(due, ?2) WHERE held = ?1", params![HELD_FOR_TOKEN, now])
    }

    /// Tasks of one kind for the runs of one PR and job (a newer flag
    /// supersedes one not sent yet).
    pub fn tasks_of_pr(&self, project: &str, pr: u64, job: &str, kind: &str) -> Result<Vec<i64>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT t.id FROM tasks t JOIN runs r ON r.id = t.run WHERE r.project = ?1 AND r.pr = ?2 AND r.job = ?3 AND t.kind = ?4",
        )?;
        let rows = stmt.query_map(params![project, pr, job, kind], |r| r.get(0))?;
        rows.collect()
    }

    pub fn tasks_of_run(&self, run: i64, kind: &str) -> Result<Vec<Task>> {
        let mut stmt =
            self.db.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run = ?1 AND kind = ?2"))?;
        let rows = stmt.query_map(params![run, kind], task_from)?;
        rows.collect()
    }

    /// Every task of this kind, oldest first.
    pub fn tasks_of_kind(&self, kind: &str) -> Result<Vec<Task>> {
        let mut stmt = self.db.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE kind = ?1 ORDER BY id"))?;
        let rows = stmt.query_map([kind], task_from)?;
        rows.collect()
    }

    /// Other unfinished runs of `job` that Jenkins gave this queue item
    /// (a trigger merged into an identical waiting one).
    pub fn open_runs_sharing(&self, job: &str, queue_id: u64, except: i64) -> Result<Vec<i64>> {
        let mut stmt = self.db.prepare_cached("SELECT id FROM runs WHERE job = ?1 AND queue_id = ?2 AND id != ?3 AND state != 'done' ORDER BY id")?;
        let rows = stmt.query_map(params![job, queue_id, except], |r| r.get(0))?;
        rows.collect()
    }

    pub fn set_work(&self, task: i64, work: &Work) -> Result<()> {
        self.db.execute("UPDATE tasks SET payload = ?2 WHERE id = ?1", params![task, work.payload().to_string()])?;
        Ok(())
    }

    pub fn set_due(&self, task: i64, due: f64) -> Result<()> {
        self.db.execute("UPDATE tasks SET due = min(due, ?2) WHERE id = ?1", params![task, due])?;
        Ok(())
    }

    /// Forget msg_ids older than the dedupe window and beyond the newest
    /// KEEP_SEEN, and finished runs older than `keep_runs` seconds (at least the window).
    pub fn prune(&self, now: f64, keep_runs: f64) -> Result<()> {
        let old = now - KEEP_SECS;
        self.db.execute("DELETE FROM seen WHERE at < ?1", [old])?;
        self.db.execute(
            "DELETE FROM seen WHERE at < (SELECT at FROM seen ORDER BY at DESC LIMIT 1 OFFSET ?1)",
            [KEEP_SEEN],
        )?;
        self.db.execute(
            "DELETE FROM runs WHERE state = 'done' AND finished < ?1 AND id NOT IN (SELECT run FROM tasks)",
            [now - keep_runs.max(KEEP_SECS)],
        )?;
        crate::web::history::prune(&self.db)?;
        // Approvals are kept about a year: a PR open that long is rare.
        self.db.execute("DELETE FROM approvals WHERE at < ?1", [now - 12.0 * KEEP_SECS])?;
        Ok(())
    }

    /// A summary for `poormanci status`.
    pub fn status(&self) -> Result<Value> {
        // Read-only, maybe a store of an older release not yet opened by this one.
        let has = |table: &str, column: &str| -> Result<bool> {
            self.db.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?.exists(params![table, column])
        };
        let run_columns = if has("runs", "flag_uid")? { RUN_COLUMNS.to_string() } else { RUN_COLUMNS.replace("flag_uid", "NULL") };
        let held = if has("tasks", "held")? { "t.held" } else { "NULL" };
        let mut stmt = self.db.prepare(&format!("SELECT {run_columns} FROM runs WHERE state != 'done' ORDER BY id"))?;
        let runs: Vec<Value> = stmt
            .query_map([], run_from)?
            .map(|r| {
                r.map(|r| {
                    json!({"id": r.id, "project": r.project, "pr": r.pr, "job": r.job, "commit": r.commit,
                           "state": r.state.as_str(), "queue_id": r.queue_id, "build": r.build, "created": r.created})
                })
            })
            .collect::<Result<_>>()?;
        let mut stmt = self.db.prepare(&format!(
            "SELECT t.id, t.run, t.kind, t.due, t.attempts, t.last_error, r.project, r.pr, r.job, {held}
             FROM tasks t LEFT JOIN runs r ON r.id = t.run ORDER BY t.due"
        ))?;
        let tasks: Vec<Value> = stmt
            .query_map([], |r| {
                Ok(json!({"id": r.get::<_, i64>(0)?, "run": r.get::<_, i64>(1)?, "kind": r.get::<_, String>(2)?,
                          "due": r.get::<_, f64>(3)?, "attempts": r.get::<_, i64>(4)?, "last_error": r.get::<_, Option<String>>(5)?,
                          "project": r.get::<_, Option<String>>(6)?, "pr": r.get::<_, Option<i64>>(7)?, "job": r.get::<_, Option<String>>(8)?,
                          "waiting_for_token": r.get::<_, Option<String>>(9)?.as_deref() == Some(HELD_FOR_TOKEN)}))
            })?
            .collect::<Result<_>>()?;
        let finished: i64 = self.db.query_row("SELECT count(*) FROM runs WHERE state = 'done'", [], |r| r.get(0))?;
        Ok(json!({"open_runs": runs, "tasks": tasks, "finished_runs": finished}))
    }
}

impl History for Store {
    fn built(&self, project: &str, pr: u64, job: &str, commit: &str) -> bool {
        self.db
            .prepare_cached("SELECT 1 FROM runs WHERE project = ?1 AND pr = ?2 AND job = ?3 AND commit_id = ?4 LIMIT 1")
            .and_then(|mut s| s.exists(params![project, pr, job, commit]))
            // Unreadable store: say "built" so that a failure never builds twice; the engine logs the error.
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(commit: &str) -> RunSpec {
        RunSpec {
            project: "pungi".into(),
            pr: 235,
            job: "pungi-pr".into(),
            commit: Some(commit.into()),
            repo: "https://pagure.io/forks/a/pungi.git".into(),
            source_branch: "fix".into(),
            target_branch: "master".into(),
            pr_url: "https://pagure.io/pungi/pull-request/235".into(),
        }
    }

    #[test]
    fn runs_finish_once() {
        let s = Store::open_in_memory();
        let id = s.add_run(&spec("aaa"), RunState::Triggering, 1.0).unwrap();
        assert!(s.built("pungi", 235, "pungi-pr", "aaa"));
        assert!(!s.built("pungi", 235, "pungi-pr", "bbb"));
        s.set_queued(id, Some(39)).unwrap();
        s.set_started(id, 149, "http://j/149/", 2.0).unwrap();
        assert_eq!(s.open_runs(&["pungi-pr".into()], Some(149)).unwrap()[0].id, id);
        assert!(s.finish(id, &json!({"kind": "queue_cancelled"}), 3.0).unwrap());
        assert!(!s.finish(id, &json!({"kind": "queue_cancelled"}), 4.0).unwrap());
        assert!(s.open_runs(&["pungi-pr".into()], Some(149)).unwrap().is_empty());
    }

    #[test]
    fn tasks_come_due_in_order() {
        let s = Store::open_in_memory();
        let run = s.add_run(&spec("aaa"), RunState::Triggering, 1.0).unwrap();
        let late = s.add_task(run, &Work::Cancel, 20.0, 100.0).unwrap();
        let early = s.add_task(run, &Work::Trigger, 10.0, 100.0).unwrap();
        assert_eq!(s.next_due().unwrap(), Some(10.0));
        assert_eq!(s.due_tasks(15.0, 10).unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), [early]);
        s.retry_task(early, 30.0, &Work::Trigger, Some("503")).unwrap();
        assert_eq!(s.due_tasks(25.0, 10).unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), [late]);
        assert_eq!(s.task(early).unwrap().unwrap().attempts, 1);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("poormanci-store-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn kept_aside(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.contains(".damaged-")).collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_that_is_not_a_database_is_kept_aside() {
        let dir = temp_dir("notadb");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), b"this is not a database, it is a shopping list").unwrap();
        std::fs::write(dir.join(format!("{FILE}-wal")), b"junk wal").unwrap();
        let s = Store::open(&dir).unwrap();
        assert!(s.first_sight("m1", 1.0).unwrap());
        let aside = kept_aside(&dir);
        assert_eq!(aside.len(), 3, "{aside:?}");
        assert!(aside[1].ends_with("-shm") && aside[2].ends_with("-wal"), "{aside:?}");
        assert_eq!(std::fs::read(dir.join(&aside[2])).unwrap(), b"junk wal");
        assert_eq!(std::fs::read(dir.join(&aside[0])).unwrap(), b"this is not a database, it is a shopping list");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_database_failing_quick_check_is_kept_aside() {
        let dir = temp_dir("corrupt");
        let s = Store::open(&dir).unwrap();
        for i in 0..2000 {
            s.first_sight(&format!("2026-{i:05}-some-long-message-id"), 1.0).unwrap();
        }
        drop(s); // checkpoints the WAL into the file
        // Overwrite a page in the middle of the seen table with garbage.
        let path = dir.join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        assert!(bytes.len() > 10 * page);
        bytes[5 * page..6 * page].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        let s = Store::open(&dir).unwrap();
        assert!(s.first_sight("2026-00001-some-long-message-id", 2.0).unwrap(), "a fresh store");
        assert_eq!(kept_aside(&dir).iter().filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm")).count(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unreadable_store_is_not_taken_for_a_damaged_one() {
        let dir = temp_dir("dir-as-db");
        std::fs::create_dir_all(dir.join(FILE)).unwrap();
        assert!(Store::open(&dir).is_err());
        assert!(kept_aside(&dir).is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn state_dir_0700_and_files_0600() {
        let dir = temp_dir("modes").join("state");
        // The usual umask (022) would give 0755 and 0644; tests/test_hardening.py tries umask 0.
        let (_lock, store) = (lock(&dir).unwrap(), Store::open(&dir).unwrap());
        store.first_sight("m", 1.0).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for name in [FILE, &format!("{FILE}-wal"), &format!("{FILE}-shm"), "lock"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).ok();
    }

    #[test]
    fn msg_ids_are_seen_once_and_pruned() {
        let s = Store::open_in_memory();
        assert!(s.first_sight("m1", 1.0).unwrap());
        assert!(!s.first_sight("m1", 2.0).unwrap());
        s.prune(1.0 + KEEP_SECS + 1.0, KEEP_SECS).unwrap();
        assert!(s.first_sight("m1", 3.0).unwrap());
    }
}
