//! What the status page needs beyond what the engine keeps for itself, and
//! the indexes that keep its pages fast with tens of thousands of runs.
//! Written on the engine thread, through the engine's own connection.
//!
//! Every addition is nullable or a new table, so a state file written
//! before them loads as it is (the columns are added on open).

use crate::config::Config;
use crate::db::{self, vals, Conn};
use crate::event::{Event, Message};
use crate::store::Store;

/// Its table in a SQLite store (the PostgreSQL schema has it from the start).
pub(crate) const SQLITE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS pull_requests (
    project TEXT NOT NULL, pr INTEGER NOT NULL, title TEXT, author TEXT, updated REAL NOT NULL,
    PRIMARY KEY (project, pr)
);
";

/// Its indexes, on either backend.
pub(crate) const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS runs_recent ON runs(project, id);
-- Without it SQLite answers the engine's per-PR queries (ORDER BY id, max(id))
-- from runs_recent, reading every run of the project.
CREATE INDEX IF NOT EXISTS runs_pr_recent ON runs(project, pr, id);
CREATE INDEX IF NOT EXISTS runs_open ON runs(project, state) WHERE state != 'done';
CREATE INDEX IF NOT EXISTS runs_ended ON runs(project, finished) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS tasks_run ON tasks(run);
";

/// Columns added to the engine's tables of a SQLite store: (table, column, type).
pub(crate) const COLUMNS: &[(&str, &str, &str)] = &[
    // Why the run was made: "new pull request", "/retest by alice", ...
    ("runs", "reason", "TEXT"),
    // When the task was recorded (epoch seconds): the age of pending work.
    ("tasks", "created", "REAL"),
];

/// Keep the PR's title and author (they change: the newest message wins).
pub fn pull_request(store: &Store, cfg: &Config, msg: &Message, now: f64) {
    let Event::PullRequest(e) = &msg.event else { return };
    if !cfg.projects.contains_key(&e.pr.project) {
        return;
    }
    let result = store.conn().execute(
        "INSERT INTO pull_requests (project, pr, title, author, updated) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (project, pr) DO UPDATE SET title = coalesce(excluded.title, pull_requests.title), author = excluded.author, updated = excluded.updated",
        vals![&e.pr.project, e.pr.id, e.pr.title.as_deref(), &e.pr.author, now],
    );
    if let Err(e) = result {
        warn!("state store: cannot record a pull request's title: {e}");
    }
}

/// Say why a run was made.
pub fn reason(store: &Store, run: i64, why: &str) {
    if let Err(e) = store.conn().execute("UPDATE runs SET reason = ?2 WHERE id = ?1", vals![run, why]) {
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
pub fn prune(db: &Conn) -> db::Result<()> {
    db.execute("DELETE FROM pull_requests WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.project = pull_requests.project AND r.pr = pull_requests.pr)", &[])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_of_release_0_1_0_gains_the_pages_columns() {
        let dir = std::env::temp_dir().join(format!("poormanci-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/state-0.1.0.sqlite3");
        std::fs::copy(file, dir.join("poormanci.sqlite3")).unwrap();
        for _ in 0..2 {
            // Twice: the second open finds everything in place.
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.run(1).unwrap().unwrap().project, "pungi");
            reason(&store, 1, "new pull request by alice");
            let why: Option<String> = store.conn().value("SELECT reason FROM runs WHERE id = 1", &[]).unwrap();
            assert_eq!(why.as_deref(), Some("new pull request by alice"));
            assert!(store.conn().exists("SELECT 1 FROM tasks WHERE created IS NULL", &[]).unwrap());
            assert!(store.conn().exists("SELECT 1 FROM pull_requests", &[]).is_ok());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
