//! What poormanci counts as it works, for `/metrics` and `/healthz`.
//!
//! Counters and histograms live in this process (one registry for the
//! process); every engine call site is one line calling a function here.
//! Gauges that the state store already knows (tasks pending, runs by state)
//! are read from it at scrape time instead (`scrape`), so they can never
//! drift from the truth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::db::{self, Conn};
use crate::policy::{Decision, Outcome};
use crate::pagure::FlagStatus;
use crate::store::{Run, Store, Task};
use crate::work::Work;

/// Seconds: from the engine taking a message (or an approval) to Jenkins
/// taking the trigger; from poormanci seeing a build end to Pagure taking the flag.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    triggers: IntCounterVec,
    reports: IntCounterVec,
    requests: IntCounterVec,
    retries: IntCounterVec,
    trigger_latency: HistogramVec,
    flag_latency: HistogramVec,
    /// Kept apart: `Core.handle` counts every message, so no label lookup there.
    ignored: IntCounter,
    malformed: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels).expect("valid metric");
    registry.register(Box::new(h.clone())).expect("registered once");
    h
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let messages = counter(
        &registry,
        "poormanci_messages_total",
        "Bus messages by what poormanci made of them (trigger, command, build_finished, ignored, refused, malformed, duplicate).",
        &["outcome"],
    );
    Metrics {
        ignored: messages.with_label_values(&["ignored"]),
        malformed: messages.with_label_values(&["malformed"]),
        messages,
        triggers: counter(&registry, "poormanci_triggers_total", "Build triggers by project, job and result (queued, failed).", &["project", "job", "result"]),
        reports: counter(&registry, "poormanci_reports_total", "Finished runs reported, by project, job and result.", &["project", "job", "result"]),
        requests: counter(&registry, "poormanci_requests_total", "HTTP requests to each peer by status class (2xx..5xx, or error: no answer).", &["peer", "class"]),
        retries: counter(&registry, "poormanci_retries_total", "Failed requests scheduled to be tried again, by task kind.", &["kind"]),
        trigger_latency: histogram(
            &registry,
            "poormanci_trigger_latency_seconds",
            "From the engine taking the bus message (or the approval) to Jenkins accepting the trigger.",
            &["project"],
        ),
        flag_latency: histogram(
            &registry,
            "poormanci_flag_latency_seconds",
            "From poormanci seeing a build end (bus message or poll) to Pagure accepting its result flag.",
            &["project"],
        ),
        registry,
    }
});

// ---- call sites in Core.handle and the engine ---------------------------

/// A message `Core.handle` dropped before the engine: not ours, or unreadable.
pub fn message_dropped(malformed: bool) {
    if malformed { &METRICS.malformed } else { &METRICS.ignored }.inc();
}

/// A message read again (same msg_id).
pub fn message_duplicate() {
    METRICS.messages.with_label_values(&["duplicate"]).inc();
}

/// What the policy decided for a message.
pub fn message_decided(decision: &Decision) {
    let outcome = match decision {
        Decision::Ignore(_) => return METRICS.ignored.inc(),
        Decision::Refuse(_) => "refused",
        Decision::Trigger { .. } => "trigger",
        Decision::Commands { .. } => "command",
        Decision::BuildFinished { .. } => "build_finished",
    };
    METRICS.messages.with_label_values(&[outcome]).inc();
}

/// An answer from a peer (`status`), or none (`None`: refused, timed out, cut).
pub fn request(peer: &str, status: Option<u16>) {
    let class = match status {
        Some(s @ 100..=599) => ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(s / 100 - 1)],
        _ => "error",
    };
    METRICS.requests.with_label_values(&[peer, class]).inc();
}

pub fn retry(task: &Task) {
    METRICS.retries.with_label_values(&[task.work.kind()]).inc();
}

/// Jenkins took a trigger: call before the task row is deleted (its age is the latency).
pub fn triggered(store: &Store, task: &Task, run: &Run, now: f64) {
    METRICS.triggers.with_label_values(&[&run.project, &run.job, "queued"]).inc();
    let created: Option<f64> = store.conn().value("SELECT created FROM tasks WHERE id = ?1", crate::db::vals![task.id]).ok().flatten();
    if let Some(created) = created {
        METRICS.trigger_latency.with_label_values(&[&run.project]).observe((now - created).max(0.0));
    }
}

/// A run is over and its report queued (the engine's one place for that).
/// A trigger given up on (refused by Jenkins, or past the retry deadline)
/// ends its run this way, so it is counted here too.
pub fn finished(run: &Run, outcome: &Outcome) {
    if let Outcome::TriggerFailed { .. } = outcome {
        METRICS.triggers.with_label_values(&[&run.project, &run.job, "failed"]).inc();
    }
    METRICS.reports.with_label_values(&[&run.project, &run.job, &result_label(outcome)]).inc();
}

/// A task was delivered: for a result flag, how long after the build's end.
pub fn delivered(store: &Store, task: &Task, run: &Run, now: f64) {
    if !matches!(&task.work, Work::Flag(f) if f.status != FlagStatus::Pending) {
        return;
    }
    let finished: Option<f64> = store.conn().value("SELECT finished FROM runs WHERE id = ?1", crate::db::vals![run.id]).ok().flatten();
    if let Some(finished) = finished {
        METRICS.flag_latency.with_label_values(&[&run.project]).observe((now - finished).max(0.0));
    }
}

/// The result word of a finished run, as a label: Jenkins' result in lower
/// case, or what else ended it.
pub fn result_label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Finished { result, .. } => result.to_lowercase(),
        Outcome::QueueCancelled => "queue_cancelled".into(),
        Outcome::NotStarted { .. } => "not_started".into(),
        Outcome::NotFinished { .. } => "not_finished".into(),
        Outcome::TriggerFailed { .. } => "trigger_failed".into(),
        Outcome::Lost { .. } => "lost".into(),
        Outcome::WrongBuild { .. } => "wrong_build".into(),
        Outcome::Superseded => "superseded".into(),
    }
}

// ---- health -------------------------------------------------------------

/// Milliseconds since the epoch of the engine's last turn; 0: never.
static HEARTBEAT_MS: AtomicU64 = AtomicU64::new(0);
/// Why the engine's last transaction failed, if it did.
static STORE_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// The engine finished a turn; `store` says whether its transaction went
/// through (a read-only or locked store fails here first).
pub fn heartbeat(store: Result<(), String>) {
    HEARTBEAT_MS.store((crate::engine::now() * 1000.0) as u64, Ordering::Relaxed);
    if let Ok(mut e) = STORE_ERROR.lock() {
        *e = store.err();
    }
}

/// The engine's last turn (epoch seconds), and the store error it met.
pub fn health() -> (Option<f64>, Option<String>) {
    let ms = HEARTBEAT_MS.load(Ordering::Relaxed);
    let error = STORE_ERROR.lock().ok().and_then(|e| e.clone());
    ((ms > 0).then(|| ms as f64 / 1000.0), error)
}

// ---- scrape -------------------------------------------------------------

/// The text exposition: this process's counters, then gauges read from the store now.
pub fn scrape(db: &Conn, now: f64) -> Result<String, String> {
    let gauges = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, String> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(|e| e.to_string())?;
        gauges.register(Box::new(g.clone())).map_err(|e| e.to_string())?;
        Ok(g)
    };
    let pending = gauge("poormanci_tasks_pending", "Requests waiting to be made or retried, by kind.", &["kind"])?;
    let oldest = gauge("poormanci_task_oldest_age_seconds", "Age of the oldest pending task, by kind.", &["kind"])?;
    let runs = gauge("poormanci_runs", "Runs in the state store, by project and state (done: the history kept, counted every 30 s).", &["project", "state"])?;
    let beat = gauge("poormanci_engine_heartbeat_age_seconds", "Seconds since the engine thread last finished a turn.", &[])?;
    let sql = |e: db::Error| format!("state store: {e}");
    for (kind, n, created) in crate::web::read::pending_tasks_by_kind(db).map_err(sql)? {
        pending.with_label_values(&[&kind]).set(n);
        oldest.with_label_values(&[&kind]).set(created.map_or(0, |c| (now - c).max(0.0) as i64));
    }
    for (project, state, n) in crate::web::read::open_runs_by_state(db).map_err(sql)? {
        runs.with_label_values(&[&project, &state]).set(n);
    }
    for (project, n) in done_runs(db).map_err(sql)? {
        runs.with_label_values(&[&project, "done"]).set(n);
    }
    if let (Some(at), _) = health() {
        beat.with_label_values::<&str>(&[]).set((now - at).max(0.0) as i64);
    }
    let mut families = METRICS.registry.gather();
    families.extend(gauges.gather());
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// The history only grows or shrinks by a few runs a minute: its size is
/// counted at most once every DONE_TTL, keeping a scrape at a few ms.
const DONE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// (project, finished runs) of each project, and when they were counted.
type Counted = (std::time::Instant, Vec<(String, i64)>);
static DONE: Mutex<Option<Counted>> = Mutex::new(None);

fn done_runs(db: &Conn) -> db::Result<Vec<(String, i64)>> {
    if let Some((at, counts)) = DONE.lock().ok().and_then(|d| d.clone()) {
        if at.elapsed() < DONE_TTL {
            return Ok(counts);
        }
    }
    let counts = crate::web::read::done_runs_by_project(db)?;
    if let Ok(mut d) = DONE.lock() {
        *d = Some((std::time::Instant::now(), counts.clone()));
    }
    Ok(counts)
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
