//! `poormanci migrate-state`: copy a SQLite state store into the PostgreSQL
//! database the config names, so that instances sharing it carry on with
//! the work the single instance had (builds followed, reports owed,
//! approvals, msg_ids seen).
//!
//! Every table, every column, ids kept (tasks name their run by id), in one
//! PostgreSQL transaction: all or nothing. Then the id sequences continue
//! after the copied ids.

use std::path::Path;

use crate::config::Config;
use crate::db::{self, vals, Conn, Value};
use crate::store::{self, Store};

/// The engine's tables first (the order they refer to each other), then
/// any other table of the store (the status page's), by name.
const FIRST: &[&str] = &["seen", "runs", "tasks", "approvals", "pull_requests"];

/// Rows per INSERT statement (PostgreSQL takes at most 65535 parameters).
const ROWS_PER_INSERT: usize = 500;

/// What was copied of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: String,
    /// Rows in the SQLite store.
    pub rows: u64,
    /// Rows written: fewer when the same key was already there (a msg_id
    /// an instance on PostgreSQL has seen since, say).
    pub copied: u64,
}

/// Copy the SQLite store of `dir` into the configured PostgreSQL store.
/// Refused, with the reason on one line, when no hub may be using `dir`
/// (its lock is taken for the copy) or when PostgreSQL already holds runs
/// or tasks.
pub fn sqlite_to_postgres(cfg: &Config, dir: &Path) -> Result<Vec<Copied>, String> {
    let Some(pg) = &cfg.store.postgresql else {
        return Err("poormanci.store.backend is not \"postgresql\": the config names no PostgreSQL database to copy into".into());
    };
    if !dir.join(store::FILE).is_file() {
        return Err(format!("no state store in {} (poormanci has not run with this state_dir, or the path is wrong)", dir.display()));
    }
    let _lock = store::lock(dir)?;
    // Opened as a hub opens it: a store of an older release gets the current schema.
    let source = Store::open(dir)?;
    let target = Store::open_postgres(pg)?;
    let place = crate::store_admin::describe_postgres(pg);
    copy(source.conn(), target.conn(), &place).map_err(|e| format!("nothing copied into {place}: {e}"))
}

fn copy(from: &Conn, to: &Conn, place: &str) -> db::Result<Vec<Copied>> {
    to.batch("BEGIN")?;
    match copy_in_transaction(from, to, place) {
        Ok(copied) => to.batch("COMMIT").map(|()| copied),
        Err(e) => {
            let _ = to.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A column of a PostgreSQL table: its name, type and whether it is an identity.
struct Column {
    name: String,
    kind: String,
    identity: bool,
}

fn target_columns(to: &Conn, table: &str) -> db::Result<Vec<Column>> {
    to.query(
        "SELECT CAST(attname AS TEXT), format_type(atttypid, atttypmod), attidentity <> ''
         FROM pg_attribute WHERE attrelid = to_regclass(CAST(?1 AS TEXT)) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        vals![table],
    )?
    .iter()
    .map(|r| Ok(Column { name: r.get(0)?, kind: r.get(1)?, identity: r.get::<i64>(2)? != 0 }))
    .collect()
}

fn source_tables(from: &Conn) -> db::Result<Vec<String>> {
    let mut tables: Vec<String> = from
        .query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_version' ORDER BY name", &[])?
        .iter()
        .map(|r| r.get::<String>(0))
        .collect::<db::Result<_>>()?;
    tables.sort_by_key(|t| (FIRST.iter().position(|f| f == t).unwrap_or(FIRST.len()), t.clone()));
    Ok(tables)
}

fn source_columns(from: &Conn, table: &str) -> db::Result<Vec<String>> {
    from.query("SELECT name FROM pragma_table_info(?1) ORDER BY cid", vals![table])?.iter().map(|r| r.get::<String>(0)).collect()
}

/// Quoted for SQL: table and column names come from the store's own schema.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQLite value as the PostgreSQL column takes it. SQLite keeps what it
/// is given where its column type allows no conversion (1.5 in an INTEGER
/// column): say so rather than store something else.
fn for_column(value: Value, column: &Column, table: &str) -> db::Result<Value> {
    let integer = matches!(column.kind.as_str(), "bigint" | "integer" | "smallint");
    let text = column.kind == "text";
    Ok(match value {
        Value::Real(f) if integer && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Int(f as i64),
        Value::Real(f) if integer => return Err(db::Error::other(format!("{table}.{}: {f} is not an integer", column.name))),
        Value::Text(s) if integer || column.kind == "double precision" => {
            return Err(db::Error::other(format!("{table}.{}: {s:?} is not a number", column.name)))
        }
        Value::Int(i) if text => Value::Text(i.to_string()),
        Value::Real(f) if text => Value::Text(f.to_string()),
        v => v,
    })
}

fn copy_in_transaction(from: &Conn, to: &Conn, place: &str) -> db::Result<Vec<Copied>> {
    let tables = source_tables(from)?;
    let mut columns = Vec::with_capacity(tables.len());
    for table in &tables {
        let target = target_columns(to, table)?;
        if target.is_empty() {
            return Err(db::Error::other(format!("the SQLite store has a table {table} that {place} has not: is this poormanci older than the one that wrote it?")));
        }
        columns.push(target);
    }
    // No instance writes while the copy is made, so that the check below holds until the commit.
    let names: Vec<String> = tables.iter().map(|t| ident(t)).collect();
    to.batch(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", names.join(", ")))?;
    let runs: i64 = to.value("SELECT count(*) FROM runs", &[])?.unwrap_or(0);
    let tasks: i64 = to.value("SELECT count(*) FROM tasks", &[])?.unwrap_or(0);
    if runs > 0 || tasks > 0 {
        return Err(db::Error::other(format!(
            "{place} already holds {runs} run(s) and {tasks} task(s): instances have worked with it, and a copy would mix two histories; migrate-state copies into a store no poormanci has used yet"
        )));
    }
    let mut copied = Vec::new();
    for (table, target) in tables.iter().zip(&columns) {
        let names = source_columns(from, table)?;
        let mut cols = Vec::with_capacity(names.len());
        for name in &names {
            match target.iter().find(|c| &c.name == name) {
                Some(c) => cols.push(c),
                None => return Err(db::Error::other(format!("{table}.{name} of the SQLite store has no column in {place} to go to"))),
            }
        }
        let list = names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ");
        let rows = from.query(&format!("SELECT {list} FROM {}", ident(table)), &[])?;
        let mut done = Copied { table: table.clone(), rows: rows.len() as u64, copied: 0 };
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut params = Vec::with_capacity(chunk.len() * cols.len());
            let mut tuples = Vec::with_capacity(chunk.len());
            for row in chunk {
                let mut marks = Vec::with_capacity(cols.len());
                for (i, column) in cols.iter().enumerate() {
                    params.push(for_column(row.get::<Value>(i)?, column, table)?);
                    marks.push(format!("?{}", params.len()));
                }
                tuples.push(format!("({})", marks.join(", ")));
            }
            let sql = format!("INSERT INTO {} ({list}) VALUES {} ON CONFLICT DO NOTHING", ident(table), tuples.join(", "));
            done.copied += to.execute(&sql, &params)? as u64;
        }
        // New rows get ids after the copied ones.
        for column in target.iter().filter(|c| c.identity) {
            to.query(
                &format!("SELECT setval(pg_get_serial_sequence(?1, ?2), max({})) FROM {}", ident(&column.name), ident(table)),
                vals![table.as_str(), column.name.as_str()],
            )?;
        }
        copied.push(done);
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(kind: &str) -> Column {
        Column { name: "c".into(), kind: kind.into(), identity: false }
    }

    #[test]
    fn values_take_the_postgresql_columns_type_or_are_refused() {
        assert_eq!(for_column(Value::Real(235.0), &column("bigint"), "runs").unwrap(), Value::Int(235));
        assert!(for_column(Value::Real(1.5), &column("bigint"), "runs").unwrap_err().message.contains("runs.c: 1.5 is not an integer"));
        assert!(for_column(Value::Text("x".into()), &column("double precision"), "seen").is_err());
        assert_eq!(for_column(Value::Int(7), &column("text"), "runs").unwrap(), Value::Text("7".into()));
        assert_eq!(for_column(Value::Int(7), &column("double precision"), "runs").unwrap(), Value::Int(7));
        assert_eq!(for_column(Value::Null, &column("bigint"), "runs").unwrap(), Value::Null);
    }

    #[test]
    fn the_engines_tables_come_first() {
        let db = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE aaa (x); CREATE TABLE tasks (x); CREATE TABLE runs (x); CREATE TABLE schema_version (v); CREATE TABLE seen (x)").unwrap();
        assert_eq!(source_tables(&db).unwrap(), ["seen", "runs", "tasks", "aaa"]);
    }
}
