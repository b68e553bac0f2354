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

use crate::config::Config;
use crate::{engine, event, store, worker};
use crate::engine::{Engine, Input};
use crate::event::{Event, Message, Node, MAX_FIELD};

create_exception!(poormanci._core, ConfigError, PyValueError, "The configuration is wrong; `problems` lists every problem.");

/// Messages waiting for the engine at most; past that `handle` waits
/// (moksha's own queue holds the rest) instead of growing without bound.
const INBOX: usize = 10_000;

/// A config with its warnings (unknown keys), or every problem.
type Checked = Result<(Config, Vec<String>), Vec<String>>;

fn config_from(config: &Bound<PyAny>) -> PyResult<Checked> {
    let value: serde_json::Value = match pythonize::depythonize(config) {
        Ok(v) => v,
        // Values JSON has no word for (a set, an object): name the key.
        Err(e) => return Ok(Err(vec![format!("config: {e}")])),
    };
    let (config, warnings) = Config::check(&value);
    Ok(config.map(|c| (c, warnings)))
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
    let (problems, warnings, summary) = match pythonize::depythonize::<serde_json::Value>(config) {
        Err(e) => (vec![format!("config: {e}")], Vec::new(), serde_json::Value::Null),
        Ok(value) => match Config::check(&value) {
            (Ok(cfg), warnings) => (Vec::new(), warnings, cfg.summary()),
            (Err(problems), warnings) => (problems, warnings, serde_json::Value::Null),
        },
    };
    let answer = serde_json::json!({"problems": problems, "warnings": warnings, "summary": summary});
    Ok(pythonize::pythonize(py, &answer)?)
}

/// The state store's pending work, for `poormanci status`.
#[pyfunction]
pub fn read_status<'py>(py: Python<'py>, state_dir: &str) -> PyResult<Bound<'py, PyAny>> {
    let value = engine::status_of(std::path::Path::new(state_dir)).map_err(PyRuntimeError::new_err)?;
    Ok(pythonize::pythonize(py, &value)?)
}

#[pyclass(module = "poormanci._core")]
pub struct Core {
    cfg: Arc<Config>,
    tx: SyncSender<Input>,
    engine: Mutex<Option<JoinHandle<()>>>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// Held for the Core's life: one poormanci per state_dir.
    _lock: Option<File>,
}

fn lock_state_dir(cfg: &Config) -> Result<File, String> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| format!("cannot create state_dir {}: {e}", cfg.state_dir.display()))?;
    let path = cfg.state_dir.join("lock");
    let file = File::create(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.try_lock().map_err(|_| {
        format!("state_dir {} is in use by another poormanci (a running hub?); stop it or use another state_dir", cfg.state_dir.display())
    })?;
    Ok(file)
}

impl Core {
    /// The message in a bus envelope, if poormanci uses it; anything else is
    /// logged (one line) and None.
    fn read(&self, topic: &Bound<PyAny>, envelope: &Bound<PyAny>) -> Option<Message> {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let id = envelope.get("msg_id").and_then(|v| v.text(MAX_FIELD)).unwrap_or_else(|| "-".into());
            let Some(topic) = topic.text(MAX_FIELD) else {
                warn!("msg {id}: dropped: the topic is not a string");
                return None;
            };
            // Decided from the config alone, here: no need to wake the engine.
            if let Some(why) = event::not_ours_early(&self.cfg, &topic, envelope) {
                debug!("msg {id} {topic}: ignored: {why}");
                return None;
            }
            match event::parse(&self.cfg, &topic, envelope) {
                Err(e) => {
                    warn!("msg {id} {topic}: malformed, dropped: {e}");
                    None
                }
                Ok(msg) => match &msg.event {
                    Event::NotOurs(why) => {
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
            let lock = lock_state_dir(&cfg).map_err(PyRuntimeError::new_err)?;
            let store = store::Store::open(&cfg.state_dir).map_err(PyRuntimeError::new_err)?;
            let peers = worker::Peers::new(&cfg).map_err(PyRuntimeError::new_err)?;
            (store, Some(Arc::new(peers)), Some(lock))
        };
        for (name, peer) in [("pagure", &cfg.pagure.peer), ("jenkins", &cfg.jenkins.peer)] {
            if peer.insecure && !dry_run {
                warn!("poormanci.{name}.insecure is on: TLS certificates of {} are NOT verified", peer.url);
            }
        }
        let (tx, rx) = mpsc::sync_channel(INBOX);
        let engine = Engine::new(cfg.clone(), store, peers, runtime.handle().clone(), tx.clone());
        let thread = std::thread::Builder::new()
            .name("poormanci-engine".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the engine thread: {e}")))?;
        let projects = cfg.projects.len();
        let jobs: usize = cfg.projects.values().map(Vec::len).sum();
        if !dry_run {
            info!("poormanci started: {projects} project(s), {jobs} job(s), topics {}", cfg.topics().join(" "));
        }
        Ok(Core { cfg, tx, engine: Mutex::new(Some(thread)), runtime: Mutex::new(Some(runtime)), _lock: lock })
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
    }
}

