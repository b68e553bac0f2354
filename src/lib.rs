//! poormanci's core, the Python module `poormanci._core`. The table of
//! contents, bottom up (each module uses only the ones above it):
//!
//! - `config`: the `poormanci.*` keys, checked once (every problem named)
//! - `event`: the typed view of a bus message, read from a Python dict
//!   (`event::python`) or JSON (`event::json`)
//! - `work`: the work owed to the peers, typed (`Work`), and `RunState`
//! - `policy`: every rule, pure: `trigger` (`jobs_for`), `commands`, `trust`,
//!   `report`, `timing`
//! - `http`, `jenkins`, `pagure`: thin clients; answers parsed into types
//! - `db`: one SQL connection, SQLite or PostgreSQL, the same statements
//! - `store`: runs, tasks, seen msg_ids (SQLite, or PostgreSQL shared by instances)
//! - `worker`: runs one task against the peers on tokio
//! - `engine`: the one thread that owns the state
//! - `python`: what Python sees: `Core`, `check_config`, `read_status`

/// Log lines go to the Python logger "poormanci" (through pyo3-log), not
/// to one per Rust module. Every line has its control characters escaped:
/// user names, branches and titles come from messages anyone can send, and
/// a newline in one must not forge a log line.
macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {
        log::$level!(target: "poormanci", "{}", $crate::one_line(&format!($($arg)*)))
    };
}
macro_rules! debug { ($($arg:tt)*) => { log_at!(debug, $($arg)*) }; }
macro_rules! info { ($($arg:tt)*) => { log_at!(info, $($arg)*) }; }
macro_rules! warn { ($($arg:tt)*) => { log_at!(warn, $($arg)*) }; }
macro_rules! error { ($($arg:tt)*) => { log_at!(error, $($arg)*) }; }

pub mod config;
pub mod db;
pub mod engine;
pub mod event;
pub mod http;
pub mod jenkins;
pub mod pagure;
pub mod policy;
mod python;
pub mod store;
pub mod web;
pub mod work;
pub mod worker;
#[cfg(test)]
mod testing;

use pyo3::prelude::*;

/// `text` on one line: control characters (and Unicode's line and paragraph
/// separators) escaped as Rust writes them (`\n`, `\u{1b}`); the rest as is.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let odd = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.contains(odd) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if odd(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Loggers cached, levels not: a level set after import must take effect.
    // Only our own lines below WARNING: the HTTP and TLS crates are chatty.
    let _ = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Loggers)?
        .filter(log::LevelFilter::Warn)
        .filter_target("poormanci".to_owned(), log::LevelFilter::Debug)
        .install();
    m.add("ConfigError", m.py().get_type::<python::ConfigError>())?;
    m.add_function(wrap_pyfunction!(python::check_config, m)?)?;
    m.add_function(wrap_pyfunction!(python::read_status, m)?)?;
    m.add_function(wrap_pyfunction!(python::check_pagure_token, m)?)?;
    m.add_class::<python::Core>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_stay_one_line() {
        assert_eq!(super::one_line("alice"), "alice");
        assert_eq!(super::one_line("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
        assert_eq!(super::one_line("x\n2026 ERROR forged\r\u{1b}[31m\u{2028}"), "x\\n2026 ERROR forged\\r\\u{1b}[31m\\u{2028}");
    }
}
