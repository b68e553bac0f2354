//! What Python sees of the core: `Core` (the consumer's engine),
//! `check_config` and `read_status` (for the CLI), and `ConfigError`.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::config::Config;
use crate::{engine, event, store, web, worker};
use crate::engine::{Engine, Input};
use crate::event::{Event, Message, Node, MAX_FIELD};

create_exception!(poormanci._core, ConfigError, PyValueError, "The configuration is wrong; `problems` lists every problem.");

/// Messages waiting for the engine at most; past that `handle` waits
/// (moksha's own queue holds the rest) instead of growing without bound.
const INBOX: usize = 10_000;

/// A config with its warnings (unknown keys), or every problem.
type Checked = Result<(Config, Vec<String>), Vec<String>>;

fn config_from(config: &Bound<PyAny>) -> PyResult<Checked> {
    let value = match plain_config(config) {
        Ok(v) => v,
        Err(problems) => return Ok(Err(problems)),
    };
    let (config, warnings) = Config::check(&value);
    Ok(config.map(|c| (c, warnings)))
}

/// The config dict as JSON, key by key, so that a value JSON has no word
/// for (a timedelta, a compiled regex, a class) is named. Callers hand over
/// the `poormanci.*` keys only (`poormanci.config.poormanci_keys`).
fn plain_config(config: &Bound<PyAny>) -> Result<serde_json::Value, Vec<String>> {
    let Ok(dict) = config.cast::<PyDict>() else {
        return pythonize::depythonize(config).map_err(|e| vec![format!("config: {e}")]);
    };
    let (mut root, mut problems) = (serde_json::Map::new(), Vec::new());
    for (key, value) in dict.iter() {
        let key = key.str().map(|k| k.to_string()).unwrap_or_else(|_| "?".into());
        match pythonize::depythonize(&value) {
            Ok(v) => drop(root.insert(key, v)),
            Err(_) => problems.push(unreadable(key, &value, 0)),
        }
    }
    if problems.is_empty() {
        Ok(serde_json::Value::Object(root))
    } else {
        Err(problems)
    }
}

/// `key: <type> is not a config value …` for the innermost key of `value`
/// that JSON cannot hold.
fn unreadable(key: String, value: &Bound<PyAny>, depth: usize) -> String {
    let bad = |v: &Bound<PyAny>| pythonize::depythonize::<serde_json::Value>(v).err();
    if depth < 32 {
        if let Ok(dict) = value.cast::<PyDict>() {
            for (k, v) in dict.iter() {
                if bad(&v).is_some() {
                    let k = k.str().map(|k| k.to_string()).unwrap_or_else(|_| "?".into());
                    let shown = if k.chars().all(|c| c.is_alphanumeric() || c == '_') { format!("{key}.{k}") } else { format!("{key}['{k}']") };
                    return unreadable(shown, &v, depth + 1);
                }
            }
        } else if let Ok(list) = value.cast::<PyList>() {
            for (i, v) in list.iter().enumerate() {
                if bad(&v).is_some() {
                    return unreadable(format!("{key}[{i}]"), &v, depth + 1);
                }
            }
        }
    }
    if value.is_instance_of::<PyDict>() || value.is_instance_of::<PyList>() {
        // Every item is fine, the container is not (a key that is not a string).
        return format!("{key}: cannot be read: {}", bad(value).map(|e| e.to_string()).unwrap_or_default());
    }
    let kind = value.get_type().fully_qualified_name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    format!("{key}: a {kind} is not a config value (expected a string, number, True/False, None, list or dict)")
}

fn config_error(py: Python, problems: Vec<String>) -> PyErr {
    let err = ConfigError::new_err(format!("poormanci config: {}", problems.join("; ")));
    let _ = err.value(py).setattr("problems", problems);
    err
}

/// A fedmsg config dict checked: `problems` (every one, [] when fine),
/// `warnings` (unknown keys) and, when there is no problem, `summary`.
#[pyfunction]
pub fn check_config<'py>(py: Python<'py>, config: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let (problems, warnings, summary) = match plain_config(config) {
        Err(problems) => (problems, Vec::new(), serde_json::Value::Null),
        Ok(value) => match Config::check(&value) {
            (Ok(cfg), warnings) => (Vec::new(), warnings, cfg.summary()),
            (Err(problems), warnings) => (problems, warnings, serde_json::Value::Null),
        },
    };
    let answer = serde_json::json!({"problems": problems, "warnings": warnings, "summary": summary});
    Ok(pythonize::pythonize(py, &answer)?)
}

/// What Pagure says of the configured token and its ACLs, for
/// `poormanci check-config`: `problems`, `warnings`, `summary` (a line or None).
#[pyfunction]
pub fn check_pagure_token<'py>(py: Python<'py>, config: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let (cfg, _) = config_from(config)?.map_err(|p| config_error(py, p))?;
    let pagure = crate::pagure::Pagure::new(&cfg.pagure).map_err(PyRuntimeError::new_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the I/O runtime: {e}")))?;
    let verdict = py.detach(|| runtime.block_on(worker::check_token(&cfg, &pagure)));
    let answer = serde_json::json!({"problems": verdict.problems, "warnings": verdict.warnings, "summary": verdict.summary});
    Ok(pythonize::pythonize(py, &answer)?)
}

/// The state store's pending work, for `poormanci status`: of a state_dir's
/// SQLite file, or of the store the config (its `poormanci.*` keys) names.
#[pyfunction]
pub fn read_status<'py>(py: Python<'py>, source: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let value = match source.extract::<String>() {
        Ok(state_dir) => engine::status_of(std::path::Path::new(&state_dir)),
        Err(_) => {
            let value = plain_config(source).map_err(|p| ConfigError::new_err(p.join("\n")))?;
            let cfg = Config::from_value(&value).map_err(|p| ConfigError::new_err(p.join("\n")))?;
            match &cfg.store.postgresql {
                Some(pg) => py.detach(|| store::Store::read_postgres(pg).and_then(|s| s.status().map_err(|e| e.to_string()))),
                None => engine::status_of(&cfg.state_dir),
            }
        }
    }
    .map_err(PyRuntimeError::new_err)?;
    Ok(pythonize::pythonize(py, &value)?)
}

#[pyclass(module = "poormanci._core")]
pub struct Core {
    cfg: Arc<Config>,
    tx: SyncSender<Input>,
    engine: Mutex<Option<JoinHandle<()>>>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// Held until close(): one poormanci per state_dir.
    lock: Mutex<Option<File>>,
}

impl Core {
    /// The message in a bus envelope, if poormanci uses it; anything else is
    /// logged (one line) and None.
    fn read(&self, topic: &Bound<PyAny>, envelope: &Bound<PyAny>) -> Option<Message> {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let id = envelope.get("msg_id").and_then(|v| v.text(MAX_FIELD)).unwrap_or_else(|| "-".into());
            let Some(topic) = topic.text(MAX_FIELD) else {
                web::metrics::message_dropped(true);
                warn!("msg {id}: dropped: the topic is not a string");
                return None;
            };
            // Decided from the config alone, here: no need to wake the engine.
            if let Some(why) = event::not_ours_early(&self.cfg, &topic, envelope) {
                web::metrics::message_dropped(false);
                debug!("msg {id} {topic}: ignored: {why}");
                return None;
            }
            match event::parse(&self.cfg, &topic, envelope) {
                Err(e) => {
                    web::metrics::message_dropped(true);
                    warn!("msg {id} {topic}: malformed, dropped: {e}");
                    None
                }
                Ok(msg) => match &msg.event {
                    Event::NotOurs(why) => {
                        web::metrics::message_dropped(false);
                        debug!("msg {id} {topic}: ignored: {why}");
                        None
                    }
                    _ => Some(msg),
                },
            }
        }));
        outcome.unwrap_or_else(|_| {
            error!("internal error while reading a message; it was dropped (see the panic message above)");
            None
        })
    }
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (config, dry_run = false))]
    fn new(py: Python, config: &Bound<PyAny>, dry_run: bool) -> PyResult<Self> {
        let (cfg, warnings) = config_from(config)?.map_err(|p| config_error(py, p))?;
        let cfg = Arc::new(cfg);
        if !dry_run {
            for warning in warnings {
                warn!("config: {warning}");
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("poormanci-io")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the I/O runtime: {e}")))?;
        // A dry run records decisions in memory and sends nothing.
        let (store, peers, lock) = if dry_run {
            (store::Store::open_in_memory(), None, None)
        } else {
            // SQLite: one instance per state_dir. PostgreSQL: any number share the database.
            let lock = match cfg.store.postgresql {
                None => Some(store::lock(&cfg.state_dir).map_err(PyRuntimeError::new_err)?),
                Some(_) => None,
            };
            let store = store::Store::open_configured(&cfg).map_err(PyRuntimeError::new_err)?;
            let peers = worker::Peers::new(&cfg).map_err(PyRuntimeError::new_err)?;
            (store, Some(Arc::new(peers)), lock)
        };
        for (name, peer) in [("pagure", &cfg.pagure.peer), ("jenkins", &cfg.jenkins.peer)] {
            if peer.insecure && !dry_run {
                warn!("poormanci.{name}.insecure is on: TLS certificates of {} are NOT verified", peer.url);
            }
        }
        if let Some(peers) = peers.clone() {
            // Said once at start, without holding it up: Pagure may be down.
            let cfg = cfg.clone();
            runtime.spawn(async move {
                let verdict = worker::check_token(&cfg, &peers.pagure).await;
                verdict.problems.iter().for_each(|p| error!("{p}"));
                verdict.warnings.iter().for_each(|w| warn!("{w}"));
                if let Some(summary) = verdict.summary {
                    info!("{summary}");
                }
            });
        }
        let (tx, rx) = mpsc::sync_channel(INBOX);
        let engine = Engine::new(cfg.clone(), store, peers, runtime.handle().clone(), tx.clone());
        let thread = std::thread::Builder::new()
            .name("poormanci-engine".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the engine thread: {e}")))?;
        if !dry_run {
            // The status page (issue 15): a port in use is logged, and CI goes on without it.
            match web::start(&runtime, cfg.clone()) {
                Ok(Some(addr)) => info!("status page on http://{addr}/"),
                Ok(None) => {}
                Err(e) => error!("{e}; running without the status page"),
            }
        }
        let projects = cfg.projects.len();
        let jobs: usize = cfg.projects.values().map(Vec::len).sum();
        if !dry_run {
            info!("poormanci started: {projects} project(s), {jobs} job(s), topics {}", cfg.topics().join(" "));
        }
        Ok(Core { cfg, tx, engine: Mutex::new(Some(thread)), runtime: Mutex::new(Some(runtime)), lock: Mutex::new(lock) })
    }

    fn topics(&self) -> Vec<String> {
        self.cfg.topics()
    }

    /// Take one bus message and return at once. Never raises: bad input is
    /// logged on one line and dropped.
    fn handle(&self, py: Python, topic: &Bound<PyAny>, envelope: &Bound<PyAny>) {
        let Some(msg) = self.read(topic, envelope) else { return };
        let (id, topic) = (msg.msg_id.clone().unwrap_or_else(|| "-".into()), msg.topic.clone());
        // The GIL is released (to wait) only when the engine is 10 000
        // messages behind; taking it back costs more than the send.
        let input = match self.tx.try_send(Input::Message(msg)) {
            Ok(()) => return,
            Err(TrySendError::Full(input)) => input,
            Err(TrySendError::Disconnected(_)) => return error!("msg {id} {topic}: dropped: poormanci is stopped"),
        };
        if py.detach(|| self.tx.send(input)).is_err() {
            error!("msg {id} {topic}: dropped: poormanci is stopped");
        }
    }

    /// Take one bus message and return once the state store has recorded it
    /// (at once for a message poormanci does not use): the AMQP callback
    /// acknowledges it then, so a crash loses nothing the broker gave.
    /// Raises RuntimeError if poormanci stops before that.
    fn handle_recorded(&self, py: Python, topic: &Bound<PyAny>, envelope: &Bound<PyAny>) -> PyResult<()> {
        let Some(msg) = self.read(topic, envelope) else { return Ok(()) };
        let (recorded, when) = mpsc::channel();
        let stopped = || PyRuntimeError::new_err("poormanci is stopped");
        let input = Input::Record { msg, recorded };
        py.detach(|| self.tx.send(input)).map_err(|_| stopped())?;
        py.detach(move || when.recv()).map_err(|_| stopped())
    }

    fn explain(&self, py: Python, topic: &str, envelope: &Bound<PyAny>) -> PyResult<Vec<String>> {
        let msg = match event::parse(&self.cfg, topic, envelope) {
            Ok(msg) => msg,
            Err(e) => return Ok(vec![format!("drop: malformed: {e}")]),
        };
        let (reply, answer) = mpsc::channel();
        self.tx.send(Input::Explain(msg, reply)).map_err(|_| PyRuntimeError::new_err("poormanci is stopped"))?;
        py.detach(move || answer.recv()).map_err(|_| PyRuntimeError::new_err("poormanci is stopped"))
    }

    fn wait_idle(&self, py: Python, timeout: f64) -> bool {
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| loop {
            let (reply, answer) = mpsc::channel();
            if self.tx.send(Input::Idle(reply)).is_err() || answer.recv().unwrap_or(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        })
    }

    #[pyo3(signature = (timeout = 5.0))]
    fn close(&self, py: Python, timeout: f64) {
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        let _ = self.tx.send(Input::Close(deadline));
        let engine = self.engine.lock().ok().and_then(|mut e| e.take());
        let runtime = self.runtime.lock().ok().and_then(|mut r| r.take());
        // Without the GIL: I/O threads may be waiting for it to log.
        py.detach(|| {
            if let Some(engine) = engine {
                let _ = engine.join();
            }
            if let Some(rt) = runtime {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        });
        // The engine, and with it the store, is gone: another Core may use the state_dir.
        drop(self.lock.lock().ok().and_then(|mut l| l.take()));
    }
}

