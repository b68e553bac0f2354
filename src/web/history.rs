//! What the status page needs beyond what the engine keeps for itself, and
//! the indexes that keep its pages fast with tens of thousands of runs.
//! Written on the engine thread, through the engine's own connection.
//!
//! Every addition is nullable or a new table, so a state file written
//! before them loads as it is (the columns are added on open).

use rusqlite::{params, Connection};

use crate::config::Config;
use crate::event::{Event, Message};
use crate::store::Store;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pull_requests (
    project TEXT NOT NULL, pr INTEGER NOT NULL, title TEXT, author TEXT, updated REAL NOT NULL,
    PRIMARY KEY (project, pr)
);
CREATE INDEX IF NOT EXISTS runs_recent ON runs(project, id);
-- Without it SQLite answers the engine's per-PR queries (ORDER BY id, max(id))
-- from runs_recent, reading every run of the project.
CREATE INDEX IF NOT EXISTS runs_pr_recent ON runs(project, pr, id);
CREATE INDEX IF NOT EXISTS runs_open ON runs(project, state) WHERE state != 'done';
CREATE INDEX IF NOT EXISTS runs_ended ON runs(project, finished) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS tasks_run ON tasks(run);
";

/// Columns added to the engine's tables: (table, column, type).
const COLUMNS: &[(&str, &str, &str)] = &[
    // Why the run was made: "new pull request", "/retest by alice", ...
    ("runs", "reason", "TEXT"),
    // When the task was recorded (epoch seconds): the age of pending work.
    ("tasks", "created", "REAL"),
];

/// Bring a state file up to date; called when the engine opens it.
pub fn migrate(db: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in COLUMNS {
        let exists = db.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])?;
        if !exists {
            db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    db.execute_batch(SCHEMA)
}

/// Keep the PR's title and author (they change: the newest message wins).
pub fn pull_request(store: &Store, cfg: &Config, msg: &Message, now: f64) {
    let Event::PullRequest(e) = &msg.event else { return };
    if !cfg.projects.contains_key(&e.pr.project) {
        return;
    }
    let result = store.conn().execute(
        "INSERT INTO pull_requests (project, pr, title, author, updated) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (project, pr) DO UPDATE SET title = coalesce(excluded.title, title), author = excluded.author, updated = excluded.updated",
        params![e.pr.project, e.pr.id, e.pr.title, e.pr.author, now],
    );
    if let Err(e) = result {
        warn!("state store: cannot record a pull request's title: {e}");
    }
}

/// Say why a run was made.
pub fn reason(store: &Store, run: i64, why: &str) {
    if let Err(e) = store.conn().execute("UPDATE runs SET reason = ?2 WHERE id = ?1", params![run, why]) {
        warn!("state store: cannot record why run {run} was made: {e}");
    }
}

/// Why runs were made for a message on this topic by this person.
pub fn reason_of_topic(topic: &str, author: &str) -> String {
    match topic.rsplit('.').next() {
        Some("new") => format!("new pull request by {author}"),
        Some("rebased") => "rebased".into(),
        _ => "new commits pushed".into(),
    }
}

/// Forget the titles of PRs none of whose runs are kept any more.
pub fn prune(db: &Connection) -> rusqlite::Result<()> {
    db.execute("DELETE FROM pull_requests WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.project = pull_requests.project AND r.pr = pull_requests.pr)", [])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as it was before the status page.
    const OLD: &str = "
        CREATE TABLE runs (id INTEGER PRIMARY KEY, project TEXT NOT NULL, pr INTEGER NOT NULL, job TEXT NOT NULL, commit_id TEXT,
            repo TEXT NOT NULL, branch TEXT NOT NULL, branch_to TEXT NOT NULL, pr_url TEXT NOT NULL,
            queue_id INTEGER, build INTEGER, build_url TEXT, state TEXT NOT NULL DEFAULT 'triggering', outcome TEXT,
            created REAL NOT NULL, started REAL, finished REAL);
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, run INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
            due REAL NOT NULL, deadline REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
        INSERT INTO runs (project, pr, job, repo, branch, branch_to, pr_url, created) VALUES ('pungi', 1, 'j', 'r', 'b', 'm', 'u', 1.0);
        INSERT INTO tasks (run, kind, payload, due, deadline) VALUES (1, 'trigger', '{}', 1.0, 2.0);
    ";

    #[test]
    fn an_old_state_file_loads_and_keeps_its_rows() {
        let dir = std::env::temp_dir().join(format!("poormanci-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Connection::open(dir.join("poormanci.sqlite3")).unwrap().execute_batch(OLD).unwrap();
        for _ in 0..2 {
            // Twice: the second open finds everything in place.
            let store = Store::open(&dir).unwrap();
            let run = store.run(1).unwrap().unwrap();
            assert_eq!(run.project, "pungi");
            reason(&store, 1, "new pull request by alice");
            let why: String = store.conn().query_row("SELECT reason FROM runs WHERE id = 1", [], |r| r.get(0)).unwrap();
            assert_eq!(why, "new pull request by alice");
            let created: Option<f64> = store.conn().query_row("SELECT created FROM tasks WHERE id = 1", [], |r| r.get(0)).unwrap();
            assert_eq!(created, None);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
