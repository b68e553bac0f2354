//! One SQL connection, to SQLite (the embedded default) or PostgreSQL (for
//! several instances sharing their state). The store and the status page
//! write each statement once, in the SQL both understand, with `?1`-style
//! placeholders; here it is run on either. Statements are prepared once per
//! connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use crate::config::PostgresConfig;

/// A value going into, or coming out of, a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file is not a database, or is corrupt (SQLite).
    Damaged,
    /// A unique key refused the row (another instance was first).
    Conflict,
    /// Another instance's transaction conflicted: try again (deadlock, serialization).
    Retry,
    Other,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn other(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Other, message: message.into() }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        let kind = match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => ErrorKind::Damaged,
            Some(rusqlite::ErrorCode::ConstraintViolation) => ErrorKind::Conflict,
            _ => ErrorKind::Other,
        };
        Error { kind, message: e.to_string() }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        use postgres::error::SqlState;
        let kind = match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => ErrorKind::Conflict,
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => ErrorKind::Retry,
            _ => ErrorKind::Other,
        };
        // The server's own message (`db error: ERROR: ...`) names the problem; never the password.
        let message = match e.as_db_error() {
            Some(db) => format!("PostgreSQL: {}", db.message()),
            // `error connecting to server` says little without its cause (`Connection refused`).
            None => match std::error::Error::source(&e) {
                Some(cause) => format!("PostgreSQL: {e}: {cause}"),
                None => format!("PostgreSQL: {e}"),
            },
        };
        Error { kind, message }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One row of an answer.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or_else(|| Error::other(format!("column {i}: unexpected value {v:?} for {}", std::any::type_name::<T>())))
    }
}

/// Values read from a column.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<u64> {
        i64::from_value(v).and_then(|i| u64::try_from(i).ok())
    }
}

impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<u32> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<u64> for Value {
    fn from(i: u64) -> Value {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(i: usize) -> Value {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Value {
        Value::Int(i.into())
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Real(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Text(s.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// `vals![a, b]`: statement parameters.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Value::from($v)),*][..] };
}
pub(crate) use vals;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        // The server says what type it wants for each parameter: give it that.
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Real(f) => f.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgresql,
}

pub enum Conn {
    Sqlite(rusqlite::Connection),
    /// The engine is one thread: a RefCell lets queries take `&self`, as rusqlite's do.
    Postgres(RefCell<Postgres>),
}

/// A PostgreSQL client, its prepared statements, and how to connect again
/// when the server went away (a restart, a failover): the next statement
/// reconnects, so an instance outlives its database's restarts.
pub struct Postgres {
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    connect: Box<dyn Fn() -> Result<postgres::Client> + Send>,
}

impl Postgres {
    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.statements.clear();
            self.client = Some((self.connect)()?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement> {
        self.client()?; // a new connection forgets the old one's statements
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client()?.prepare(&dollar_placeholders(sql))?;
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

/// A PostgreSQL connection as `cfg` says, the password read from its
/// file (never from the DSN, never in an error message). Without TLS.
pub fn connect_postgres(cfg: &PostgresConfig, application_name: &str) -> Result<Conn> {
    let mut config: postgres::Config = cfg.dsn.parse().map_err(|e| Error::other(format!("poormanci.store.dsn: {e}")))?;
    if let Some(file) = &cfg.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| Error::other(format!("poormanci.store.password_file {}: {e}", file.display())))?;
        config.password(text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(&text));
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    // libpq's default is to wait for ever on a host that does not answer.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    let connect = move || config.connect(postgres::NoTls).map_err(Error::from);
    let client = connect()?;
    Ok(Conn::Postgres(RefCell::new(Postgres { client: Some(client), statements: HashMap::new(), connect: Box::new(connect) })))
}

/// `?1` → `$1`: the one difference in placeholders.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

fn from_postgres(row: &postgres::Row, i: usize) -> Result<Value> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(v.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(v.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(v.into())),
        Type::VOID => None,
        Type::NUMERIC => return Err(Error::other(format!("column {i}: NUMERIC is not read; cast it"))),
        _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
    };
    Ok(v.unwrap_or(Value::Null))
}

impl Conn {
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgresql,
        }
    }

    /// Statements without parameters, several separated by `;`.
    pub fn batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(db) => Ok(db.execute_batch(sql)?),
            Conn::Postgres(pg) => Ok(pg.borrow_mut().client()?.batch_execute(sql)?),
        }
    }

    /// Run a statement; how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        match self {
            Conn::Sqlite(db) => Ok(db.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let stmt = pg.prepared(sql)?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(pg.client()?.execute(&stmt, &refs)? as usize)
            }
        }
    }

    /// Every row of a query's answer.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match self {
            Conn::Sqlite(db) => {
                let mut stmt = db.prepare_cached(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
                    (0..n).map(|i| r.get_ref(i).map(from_sqlite)).collect::<rusqlite::Result<Vec<_>>>()
                })?;
                Ok(rows.map(|r| r.map(Row)).collect::<rusqlite::Result<_>>()?)
            }
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let stmt = pg.prepared(sql)?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                let rows = pg.client()?.query(&stmt, &refs)?;
                rows.iter().map(|r| (0..r.len()).map(|i| from_postgres(r, i)).collect::<Result<Vec<_>>>().map(Row)).collect()
            }
        }
    }

    /// The first row of the answer, if any.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first column of the first row (an aggregate, say), None when NULL or no row.
    pub fn value<T: FromValue>(&self, sql: &str, params: &[Value]) -> Result<Option<T>> {
        match self.query_opt(sql, params)? {
            Some(row) => row.get::<Option<T>>(0),
            None => Ok(None),
        }
    }

    pub fn exists(&self, sql: &str, params: &[Value]) -> Result<bool> {
        Ok(self.query_opt(sql, params)?.is_some())
    }

    /// The SQLite connection, for what only SQLite has (its file's checks and pragmas).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(db) => Some(db),
            Conn::Postgres(_) => None,
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?10)"), "SELECT a FROM t WHERE b = $1 AND c IN ($2, $10)");
    }

    #[test]
    fn values_round_trip_on_sqlite() {
        let db = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (i INTEGER, f REAL, s TEXT)").unwrap();
        assert_eq!(db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", vals![7u64, 1.5, "x"]).unwrap(), 1);
        db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", vals![None::<i64>, 2.0, None::<String>]).unwrap();
        let rows = db.query("SELECT i, f, s FROM t ORDER BY f", &[]).unwrap();
        assert_eq!(rows[0].get::<u64>(0).unwrap(), 7);
        assert_eq!(rows[0].get::<String>(2).unwrap(), "x");
        assert_eq!(rows[1].get::<Option<i64>>(0).unwrap(), None);
        assert!(rows[1].get::<String>(2).is_err());
        assert_eq!(db.value::<f64>("SELECT max(f) FROM t", &[]).unwrap(), Some(2.0));
        assert_eq!(db.value::<f64>("SELECT max(f) FROM t WHERE i = 99", &[]).unwrap(), None);
    }

    /// Refused (nobody listens), or refused by the server (a wrong password,
    /// against the PostgreSQL of POORMANCI_TEST_PG_DSN when there is one):
    /// the error says why, never with the password in it.
    #[test]
    fn a_connection_error_never_shows_the_password() {
        let dir = std::env::temp_dir().join(format!("poormanci-db-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "HUSH-9f3a\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut dsns = vec![(format!("host=127.0.0.1 port={port} dbname=poormanci user=ci"), "Connection refused")];
        if std::env::var_os("POORMANCI_TEST_PG_PASSWORD_FILE").is_some() {
            dsns.extend(std::env::var("POORMANCI_TEST_PG_DSN").map(|dsn| (dsn, "password authentication failed")));
        }
        for (dsn, why) in dsns {
            let e = connect_postgres(&PostgresConfig { dsn, password_file: Some(file.clone()) }, "poormanci-test").err().unwrap();
            assert!(e.message.starts_with("PostgreSQL: ") && e.message.contains(why) && !e.message.contains("HUSH"), "{e}");
        }
        let missing = dir.join("missing");
        let e = connect_postgres(&PostgresConfig { dsn: "host=127.0.0.1".into(), password_file: Some(missing) }, "t").err().unwrap();
        assert!(e.message.starts_with("poormanci.store.password_file ") && e.message.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
