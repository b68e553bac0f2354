//! The state store as the `poormanci` command shows it: which store a
//! config names (`describe`), what it holds (`status`) and whether this
//! poormanci can use it (`check`, for check-config). Read-only: nothing
//! here writes to a store or migrates its schema.

use std::path::Path;

use serde_json::Value;

use crate::config::{Config, PostgresConfig};
use crate::store::{self, Store, SCHEMA_VERSION};

/// `PostgreSQL host=db port=5432 dbname=poormanci user=ci`: where the store
/// is, from the parsed DSN (so never a password, whatever was written).
pub fn describe_postgres(pg: &PostgresConfig) -> String {
    let Ok(c) = pg.dsn.parse::<postgres::Config>() else {
        return "PostgreSQL (poormanci.store.dsn unreadable)".into();
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
    let mut parts = Vec::new();
    for (key, value) in [("host", hosts.join(",")), ("port", ports.join(","))] {
        if !value.is_empty() {
            parts.push(format!("{key}={value}"));
        }
    }
    for (key, value) in [("dbname", c.get_dbname()), ("user", c.get_user())] {
        if let Some(value) = value {
            parts.push(format!("{key}={value}"));
        }
    }
    format!("PostgreSQL {}", parts.join(" "))
}

fn describe_sqlite(dir: &Path) -> String {
    format!("SQLite {}", dir.join(store::FILE).display())
}

/// The store the config names, for people: `SQLite <file>` or `PostgreSQL host=…`.
pub fn describe(cfg: &Config) -> String {
    match &cfg.store.postgresql {
        Some(pg) => describe_postgres(pg),
        None => describe_sqlite(&cfg.state_dir),
    }
}

/// Runs not finished and tasks of the SQLite store in `dir` (read while a
/// hub may be running), and `store`: which store it is.
pub fn status_of_dir(dir: &Path) -> Result<Value, String> {
    if !dir.join(store::FILE).is_file() {
        return Err(format!("no state store in {} (poormanci has not run with this state_dir, or the path is wrong)", dir.display()));
    }
    let mut status = crate::engine::status_of(dir)?;
    status["store"] = describe_sqlite(dir).into();
    Ok(status)
}

/// The same, of the store the config names: SQLite in state_dir or the
/// PostgreSQL database.
pub fn status(cfg: &Config) -> Result<Value, String> {
    let Some(pg) = &cfg.store.postgresql else {
        return status_of_dir(&cfg.state_dir);
    };
    let place = describe_postgres(pg);
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read the state store ({place}): {e}");
    let store = Store::read_postgres(pg).map_err(|e| cannot(&e))?;
    match store.schema_version().map_err(|e| cannot(&e))? {
        0 => return Err(format!("no state store in {place} yet (poormanci makes it when it first starts with this config)")),
        v if v > SCHEMA_VERSION => return Err(cannot(&newer(v))),
        _ => {}
    }
    let mut status = store.status().map_err(|e| cannot(&e))?;
    status["store"] = place.into();
    Ok(status)
}

fn newer(version: i64) -> String {
    format!("its schema is version {version}, written by a newer poormanci (this one writes {SCHEMA_VERSION}): upgrade this poormanci")
}

/// What check-config learns by asking the store: a problem each (one line),
/// or a summary line.
#[derive(Debug, Default)]
pub struct Verdict {
    pub problems: Vec<String>,
    pub summary: Option<String>,
}

/// Whether this poormanci can use the PostgreSQL database the config names:
/// it answers the DSN and password, and its schema is one this poormanci
/// reads or makes. SQLite: nothing to ask (its file is made at first start).
pub fn check(cfg: &Config) -> Verdict {
    let Some(pg) = &cfg.store.postgresql else { return Verdict::default() };
    let place = describe_postgres(pg);
    let problem = |why: String| Verdict { problems: vec![format!("poormanci.store: {why}")], summary: None };
    let store = match Store::read_postgres(pg) {
        Ok(store) => store,
        Err(e) => return problem(format!("cannot connect to {place}: {e}")),
    };
    let version = match store.schema_version() {
        Ok(v) => v,
        Err(e) => return problem(format!("cannot read the schema version in {place}: {e}")),
    };
    let summary = |what: String| Verdict { problems: Vec::new(), summary: Some(format!("state store: {place}: {what}")) };
    match version {
        0 => match can_make_schema(&store) {
            Ok(None) => summary("empty: poormanci makes its tables at first start".into()),
            Ok(Some(why)) => problem(format!("{place} is empty, and poormanci could not make its tables there: {why}")),
            Err(e) => problem(format!("cannot read {place}: {e}")),
        },
        v if v == SCHEMA_VERSION => summary(format!("schema version {v} (this poormanci writes {SCHEMA_VERSION})")),
        v if v < SCHEMA_VERSION => summary(format!("schema version {v} (this poormanci writes {SCHEMA_VERSION}: it brings it up to date when it starts)")),
        v => problem(format!("{place}: {}", newer(v))),
    }
}

/// Why the first start could not make the schema in an empty database, if
/// it could not: tables of the same names made by something else, or a
/// role without CREATE on the schema (PostgreSQL 15 and later no longer
/// give it on `public` to every role).
fn can_make_schema(store: &Store) -> crate::db::Result<Option<String>> {
    let db = store.conn();
    let taken: Vec<String> = db
        .query(
            "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = current_schema()
             AND tablename IN ('seen', 'runs', 'tasks', 'approvals', 'pull_requests') ORDER BY tablename",
            &[],
        )?
        .iter()
        .map(|r| r.get::<String>(0))
        .collect::<crate::db::Result<_>>()?;
    if !taken.is_empty() {
        return Ok(Some(format!(
            "it already has tables named {} that poormanci did not make (no schema_version table); give poormanci a database of its own",
            taken.join(", ")
        )));
    }
    let Some(row) = db.query_opt(
        "SELECT CAST(current_user AS TEXT), CAST(current_schema() AS TEXT), has_schema_privilege(current_schema(), 'CREATE')",
        &[],
    )?
    else {
        return Ok(None);
    };
    let (user, schema): (String, Option<String>) = (row.get(0)?, row.get(1)?);
    Ok(match (schema, row.get::<Option<i64>>(2)?) {
        (None, _) => Some(format!("user {user} has no schema to create tables in (search_path names none that exists)")),
        (Some(schema), Some(0) | None) => Some(format!(
            "user {user} may not create tables in schema {schema}; make the database {user}'s (CREATE DATABASE … OWNER {user}) or GRANT CREATE ON SCHEMA {schema} TO {user}"
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_store_is_described_by_where_it_is() {
        let pg = |dsn: &str| PostgresConfig { dsn: dsn.into(), password_file: Some("/etc/poormanci/db-password".into()) };
        assert_eq!(describe_postgres(&pg("host=db.example.org dbname=poormanci user=ci")), "PostgreSQL host=db.example.org dbname=poormanci user=ci");
        assert_eq!(
            describe_postgres(&pg("host=a,b port=5433 dbname=ci user=ci application_name=x connect_timeout=3")),
            "PostgreSQL host=a,b port=5433 dbname=ci user=ci"
        );
        // Config::check refuses a DSN with a password; were one there, it is still not shown.
        assert_eq!(describe_postgres(&pg("host=db user=ci password=hunter2")), "PostgreSQL host=db user=ci");
    }
}
