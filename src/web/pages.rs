//! The HTML pages: data from `read`, words from `view`, markup from the
//! templates in `templates/` (minijinja, HTML auto-escaping on: every text
//! from the bus is escaped where it is written). Charts are SVG drawn here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use minijinja::value::Serde;
use minijinja::{context, Environment, Value};
use serde::Serialize;

use crate::db::{self, Conn};
use crate::web::read::{self, Ended};
use crate::web::view::{self, RunView, Site};

/// Runs shown per project on `/`, and per page of a project's history.
pub const RECENT: usize = 10;
pub const PAGE: usize = 50;
/// A PR shows at most this many runs (newest first).
const PR_RUNS: usize = 500;
/// The charts cover this many days, and are drawn again at most this often.
const CHART_DAYS: i64 = 28;
const CHART_TTL: Duration = Duration::from_secs(60);

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("runs.html", include_str!("templates/runs.html")),
        ("index.html", include_str!("templates/index.html")),
        ("project.html", include_str!("templates/project.html")),
        ("pr.html", include_str!("templates/pr.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, source).expect("templates parse");
    }
    env.add_filter("time", |t: Option<f64>| t.map_or_else(|| "-".to_string(), view::time_words));
    env.add_filter("stime", |t: Option<f64>| t.map_or_else(|| "-".to_string(), view::short_time_words));
    env.add_filter("duration", |s: Option<f64>| s.map_or_else(|| "-".to_string(), view::duration_words));
    env.add_filter("short", |c: Option<String>| crate::policy::short(c.as_deref()).to_string());
    env
});

pub const CSS: &str = include_str!("templates/style.css");

fn render(name: &str, ctx: Value) -> Result<String, String> {
    TEMPLATES.get_template(name).and_then(|t| t.render(ctx)).map_err(|e| format!("cannot render {name}: {e}"))
}

/// Views for rows, with their pending tasks and what superseded them.
pub fn views(site: &Site, db: &Conn, rows: Vec<read::RunRow>) -> db::Result<Vec<RunView>> {
    // Finished runs too: their report, flag or comment may be pending.
    let tasks = read::tasks_of(db, rows.iter().map(|r| r.id))?;
    rows.into_iter()
        .map(|row| {
            let superseded = row.outcome.as_ref().and_then(|o| o.get("kind")).and_then(|k| k.as_str()) == Some("superseded");
            let next = if superseded { read::next_run(db, &row)? } else { None };
            let tasks = tasks.get(&row.id).map(Vec::as_slice).unwrap_or_default();
            Ok(view::run_view(site, row, tasks, next))
        })
        .collect()
}

#[derive(Serialize)]
struct ProjectView {
    name: String,
    jobs: Vec<String>,
    counts: read::Counts,
    chart: Chart,
    runs: Vec<RunView>,
    /// The page of this project's older runs, when there are more.
    more: Option<String>,
}

/// Charts by project, drawn at most once a CHART_TTL.
static CHARTS: LazyLock<Mutex<HashMap<String, (Instant, Chart)>>> = LazyLock::new(Default::default);

fn chart_of(db: &Conn, project: &str, now: f64) -> db::Result<Chart> {
    if let Some((at, chart)) = CHARTS.lock().ok().and_then(|c| c.get(project).cloned()) {
        if at.elapsed() < CHART_TTL {
            return Ok(chart);
        }
    }
    let today = (now / 86400.0).floor() as i64;
    let first = today - CHART_DAYS + 1;
    let chart = Chart::draw(&read::ended_since(db, project, first as f64 * 86400.0)?, first, CHART_DAYS);
    if let Ok(mut charts) = CHARTS.lock() {
        charts.insert(project.to_string(), (Instant::now(), chart.clone()));
    }
    Ok(chart)
}

pub fn index(site: &Site, db: &Conn, now: f64) -> Result<String, String> {
    let projects = index_data(site, db, now).map_err(|e| format!("cannot read the state store: {e}"))?;
    render("index.html", context! { base => &site.base, refresh => 30, projects => Value::from(Serde(&projects)), ok_to_test => &site.cfg.commands.ok_to_test, now })
}

fn index_data(site: &Site, db: &Conn, now: f64) -> db::Result<Vec<ProjectView>> {
    let mut counts = read::counts(db)?;
    let mut out = Vec::new();
    for (name, jobs) in &site.cfg.projects {
        let rows = read::recent_runs(db, name, None, RECENT + 1)?;
        let more = (rows.len() > RECENT).then(|| format!("{}/{name}/runs", site.base));
        let runs = views(site, db, rows.into_iter().take(RECENT).collect())?;
        out.push(ProjectView {
            name: name.clone(),
            jobs: jobs.iter().map(|j| j.job.clone()).collect(),
            counts: counts.remove(name).unwrap_or_default(),
            chart: chart_of(db, name, now)?,
            runs,
            more,
        });
    }
    Ok(out)
}

/// A project's runs, PAGE at a time, older than run `before`.
pub fn project(site: &Site, db: &Conn, name: &str, before: Option<i64>, now: f64) -> Result<String, String> {
    let page = (|| {
        let rows = read::recent_runs(db, name, before, PAGE + 1)?;
        let older = (rows.len() > PAGE).then(|| rows[PAGE - 1].id);
        Ok::<_, db::Error>((views(site, db, rows.into_iter().take(PAGE).collect())?, older))
    })();
    let (runs, older) = page.map_err(|e| format!("cannot read the state store: {e}"))?;
    let older = older.map(|id| format!("{}/{name}/runs?before={id}", site.base));
    let newest = before.map(|_| format!("{}/{name}/runs", site.base));
    render("project.html", context! { base => &site.base, project => name, runs => Value::from(Serde(&runs)), older, newest, now })
}

/// Runs of one commit of a PR.
#[derive(Serialize)]
struct CommitView {
    commit: Option<String>,
    runs: Vec<RunView>,
}

pub fn pull_request(site: &Site, db: &Conn, project: &str, pr: u64, now: f64) -> Result<String, String> {
    let data = (|| {
        let runs = views(site, db, read::runs_of_pr(db, project, pr, PR_RUNS)?)?;
        Ok::<_, db::Error>((runs, read::approval(db, project, pr)?))
    })();
    let (runs, approval) = data.map_err(|e| format!("cannot read the state store: {e}"))?;
    let mut commits: Vec<CommitView> = Vec::new();
    for run in runs {
        match commits.last_mut() {
            Some(c) if c.commit == run.run.commit => c.runs.push(run),
            _ => commits.push(CommitView { commit: run.run.commit.clone(), runs: vec![run] }),
        }
    }
    let first = commits.first().and_then(|c| c.runs.first());
    let title = first.and_then(|r| r.run.title.clone());
    let author = first.and_then(|r| r.run.author.clone());
    let pagure = first.and_then(|r| r.links.pagure.clone());
    render(
        "pr.html",
        context! {
            base => &site.base, refresh => 15, project, pr, title, author, pagure, commits => Value::from(Serde(&commits)), now,
            approved_by => approval.as_ref().map(|a| a.0.clone()), approved_at => approval.map(|a| a.1),
            ok_to_test => &site.cfg.commands.ok_to_test,
        },
    )
}

pub fn error(site: &Site, title: &str, text: &str) -> String {
    render("error.html", context! { base => &site.base, title, text })
        .unwrap_or_else(|_| "poormanci: the page could not be drawn\n".to_string())
}

// ---- charts ----------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    class: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Day {
    x: f64,
    /// The tooltip: "2026-11-30: 3 passed, 1 failed; median build 2 min 05 s".
    title: String,
    bars: Vec<Bar>,
}

/// Results per day (stacked bars) and the median build duration (a line),
/// over CHART_DAYS days; sizes in SVG user units.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    width: f64,
    height: f64,
    days: Vec<Day>,
    /// Polyline points of the median duration per day that had builds.
    line: String,
    dots: Vec<(f64, f64)>,
    max_runs: u32,
    max_duration: String,
    first_day: String,
    last_day: String,
    total: u32,
    /// For screen readers, and the JSON API.
    summary: String,
}

const LEFT: f64 = 28.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 8.0;
const PLOT_H: f64 = 90.0;
const BAR_W: f64 = 10.0;
const STEP: f64 = 12.0;

impl Chart {
    pub fn draw(ended: &[Ended], first_day: i64, days: i64) -> Chart {
        // Per day: passed, failed, other (errors, cancels); durations of builds.
        let mut per_day: BTreeMap<i64, ([u32; 3], Vec<f64>)> = BTreeMap::new();
        for e in ended {
            let day = (e.finished / 86400.0).floor() as i64;
            if day < first_day || day >= first_day + days {
                continue;
            }
            let kind = e.kind.as_deref().unwrap_or("");
            let result = e.result.as_deref().unwrap_or("");
            let slot = match (kind, result) {
                ("superseded", _) => continue,
                ("finished", "SUCCESS") => 0,
                ("finished", "FAILURE" | "UNSTABLE") => 1,
                _ => 2,
            };
            let entry = per_day.entry(day).or_default();
            entry.0[slot] += 1;
            if let (Some(s), "finished") = (e.started, kind) {
                entry.1.push((e.finished - s).max(0.0));
            }
        }
        let max_runs = per_day.values().map(|(c, _)| c.iter().sum::<u32>()).max().unwrap_or(0).max(1);
        let medians: BTreeMap<i64, f64> = per_day
            .iter()
            .filter(|(_, (_, d))| !d.is_empty())
            .map(|(day, (_, d))| {
                let mut d = d.clone();
                d.sort_by(f64::total_cmp);
                (*day, d[d.len() / 2])
            })
            .collect();
        let max_duration = medians.values().copied().fold(0.0, f64::max);
        let x_of = |day: i64| LEFT + (day - first_day) as f64 * STEP;
        let mut out_days = Vec::new();
        let mut total = 0;
        for (day, (counts, _)) in &per_day {
            let mut y = TOP + PLOT_H;
            let mut bars = Vec::new();
            for (n, class) in counts.iter().zip(["success", "failure", "other"]) {
                if *n == 0 {
                    continue;
                }
                let h = PLOT_H * f64::from(*n) / f64::from(max_runs);
                y -= h;
                bars.push(Bar { x: x_of(*day), y, w: BAR_W, h, class });
            }
            total += counts.iter().sum::<u32>();
            let mut title = format!("{}: {} passed, {} failed, {} other", view::day_words(*day), counts[0], counts[1], counts[2]);
            if let Some(m) = medians.get(day) {
                title.push_str(&format!("; median build {}", view::duration_words(*m)));
            }
            out_days.push(Day { x: x_of(*day), title, bars });
        }
        let dots: Vec<(f64, f64)> = medians
            .iter()
            .map(|(day, m)| (x_of(*day) + BAR_W / 2.0, TOP + PLOT_H - PLOT_H * m / max_duration.max(1.0)))
            .collect();
        let line = dots.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ");
        Chart {
            width: LEFT + days as f64 * STEP + RIGHT,
            height: TOP + PLOT_H + 22.0,
            days: out_days,
            line,
            dots,
            max_runs,
            max_duration: view::duration_words(max_duration),
            first_day: view::day_words(first_day),
            last_day: view::day_words(first_day + days - 1),
            total,
            summary: format!("{total} finished runs over the last {days} days"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(day: i64, result: &str, secs: f64) -> Ended {
        let finished = day as f64 * 86400.0 + 3600.0;
        Ended { finished, started: Some(finished - secs), kind: Some("finished".into()), result: Some(result.into()) }
    }

    // needs the lead's store: `store.conn()` giving a `&db::Conn` (until then
    // crate::web::both_backends covers the same on the pages' own tables).
        #[test]
    fn text_from_the_bus_is_escaped_and_secrets_hidden() {
        let store = crate::store::Store::open_in_memory();
        let db = store.conn();
        let spec = crate::policy::RunSpec {
            project: "pungi".into(),
            pr: 5,
            job: "pungi-pr".into(),
            commit: Some("abcdef0123456789".into()),
            repo: "r".into(),
            source_branch: "b".into(),
            target_branch: "master".into(),
            pr_url: "javascript:alert(1)".into(),
        };
        let run = store.add_run(&spec, crate::work::RunState::Triggering, 1000.0).unwrap().unwrap();
        store.add_task(run, &crate::work::Work::Trigger, 1000.0, 5000.0).unwrap();
        db.execute("UPDATE tasks SET attempts = 2, last_error = 'POST /job/pungi-pr: 500: token BEEFCAFE refused'", &[]).unwrap();
        db.execute("INSERT INTO pull_requests VALUES ('pungi', 5, '<script>alert(1)</script>', '\"><b>x', 1.0)", &[]).unwrap();
        let site = Site::new(std::sync::Arc::new(crate::testing::config()));
        for page in [index(&site, db, 2000.0).unwrap(), pull_request(&site, db, "pungi", 5, 2000.0).unwrap()] {
            assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{page}");
            assert!(!page.contains("<script") && !page.contains("<b>x") && !page.contains("javascript:"), "{page}");
            assert!(!page.contains("BEEFCAFE") && !page.contains("PAGURE-SECRET"), "{page}");
            assert!(page.contains("retrying"));
        }
        let pr = pull_request(&site, db, "pungi", 5, 2000.0).unwrap();
        assert!(pr.contains("token *** refused"), "{pr}");
    }

    #[test]
    fn chart_stacks_results_per_day_and_draws_median_durations() {
        let runs = [ended(100, "SUCCESS", 60.0), ended(100, "FAILURE", 120.0), ended(101, "SUCCESS", 30.0), ended(50, "SUCCESS", 1.0)];
        let chart = Chart::draw(&runs, 90, 28);
        assert_eq!(chart.total, 3, "the run before the window is left out");
        assert_eq!(chart.days.len(), 2);
        assert_eq!(chart.days[0].bars.iter().map(|b| b.class).collect::<Vec<_>>(), ["success", "failure"]);
        assert_eq!(chart.max_runs, 2);
        assert_eq!(chart.dots.len(), 2);
        assert!(chart.days[0].title.starts_with("1970-04-11: 1 passed, 1 failed"), "{}", chart.days[0].title);
    }
}
