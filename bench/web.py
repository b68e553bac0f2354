"""Status page benchmark (issue 15): page, API and /metrics response times
with 50 000 runs in the state store, idle and while the hub handles messages,
and the hub's own latency with and without people reading pages.

    .venv/bin/python bench/web.py            # 50 000 runs, full sizes
    .venv/bin/python bench/web.py --quick    # 5 000 runs, small sizes (CI)

Goals: p99 <= 50 ms for a page, <= 10 ms for /metrics; the hub's latency
(bus message -> trigger at Jenkins) does not move while pages are read.
Everything runs through the real fedmsg-hub with the stand-ins of bench/run.py;
the store is made by poormanci itself, then filled with finished runs spread
over the last 89 days. Prints a table; exits non-zero only when a run fails
(or, with --check, when a goal is missed).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BenchHub, StandIns, bench_config, loadavg, log, pct  # noqa: E402

import messages  # noqa: E402  (tests/ is on sys.path through run.py)
from harness import free_port  # noqa: E402

FULL = SimpleNamespace(runs=50_000, requests=300, latency=200, burst=300)
QUICK = SimpleNamespace(runs=5_000, requests=50, latency=30, burst=50)
PACED = 0.1  # a busy page: each of 2 readers loads a page every 100 ms
GOALS = {"page_p99_ms": 50.0, "metrics_p99_ms": 10.0}
SEEDED_PR = 100_000  # seeded PRs are numbered from here: never one the bus messages name
RESULTS = ["SUCCESS"] * 16 + ["FAILURE"] * 2 + ["UNSTABLE", "ABORTED"]


def seed(state_dir: Path, config: dict, n: int, rng: random.Random) -> dict:
    """``n`` runs of pungi (4/5) and rpms/python-foo (1/5), 4 per PR, on a
    store poormanci created and migrated itself."""
    from poormanci._core import Core
    Core({k: v for k, v in config.items() if k != "poormanci.web"}).close()
    db = sqlite3.connect(state_dir / "poormanci.sqlite3")
    now = time.time()
    runs, prs = [], []
    for i in range(n):
        project = "rpms/python-foo" if i % 5 == 4 else "pungi"
        job = "folder/python-foo" if project != "pungi" else "pungi-pr"
        pr = SEEDED_PR + i // 4
        end = now - rng.uniform(60, 89 * 86400)
        start = end - rng.uniform(30, 1800)
        if i % 4 == 3 and rng.random() < 0.2:
            outcome, build = {"kind": "superseded"}, None
        else:
            build = i + 1
            outcome = {"kind": "finished", "number": build, "url": f"http://jenkins.example/job/{job}/{build}/",
                       "result": rng.choice(RESULTS)}
        runs.append((project, pr, job, f"{rng.getrandbits(160):040x}", "https://pagure.example/forks/a/x.git", "fix",
                     "master", f"https://pagure.example/{project}/pull-request/{pr}", build,
                     outcome.get("url"), "done", json.dumps(outcome), start - 5, start, end, "new pull request by alice"))
        if i % 4 == 0:
            prs.append((project, pr, f"Change number {pr} <with markup & such>", "alice", end))
    db.executemany("INSERT INTO runs (project, pr, job, commit_id, repo, branch, branch_to, pr_url, build, build_url, state,"
                   " outcome, created, started, finished, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
    db.executemany("INSERT OR REPLACE INTO pull_requests (project, pr, title, author, updated) VALUES (?,?,?,?,?)", prs)
    db.commit()
    mid = db.execute("SELECT id FROM runs WHERE project = 'pungi' ORDER BY id LIMIT 1 OFFSET ?", (n // 3,)).fetchone()[0]
    busy_pr = db.execute("SELECT pr FROM runs WHERE project = 'pungi' GROUP BY pr ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    db.close()
    return {"mid_run": mid, "pr": busy_pr}


def endpoints(seeded: dict) -> dict[str, str]:
    return {
        "/": "/",
        "PR page": f"/pungi/pull-request/{seeded['pr']}",
        "project page (paged)": f"/pungi/runs?before={seeded['mid_run']}",
        "API runs": "/api/v1/runs?project=pungi",
        "API PR": f"/api/v1/pungi/pull-request/{seeded['pr']}",
        "/metrics": "/metrics",
        "/healthz": "/healthz",
    }


def timed_get(session: requests.Session, url: str) -> float:
    t0 = time.perf_counter()
    r = session.get(url, timeout=10)
    ms = (time.perf_counter() - t0) * 1e3
    if r.status_code != 200:
        raise AssertionError(f"GET {url}: {r.status_code} {r.text[:200]}")
    return ms


def measure(base: str, paths: dict[str, str], n: int) -> dict[str, list[float]]:
    session = requests.Session()
    out = {}
    for name, path in paths.items():
        for _ in range(5):
            timed_get(session, base + path)
        out[name] = [timed_get(session, base + path) for _ in range(n)]
    return out


class Readers:
    """``k`` threads reading every page in turn, as fast as they can or one
    page every ``pause`` seconds each; the times they saw, by page."""

    def __init__(self, base: str, paths: dict[str, str], k: int = 2, pause: float = 0.0):
        self.base, self.paths, self.k, self.pause = base, paths, k, pause
        self.times: dict[str, list[float]] = {name: [] for name in paths}
        self.stop = threading.Event()
        self.errors: list[str] = []

    def _run(self):
        session = requests.Session()
        while not self.stop.is_set():
            for name, path in self.paths.items():
                try:
                    self.times[name].append(timed_get(session, self.base + path))
                except Exception as e:  # noqa: BLE001 - reported at the end
                    self.errors.append(f"{name}: {e}")
                if self.pause:
                    self.stop.wait(self.pause)

    def __enter__(self):
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.k)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def one_at_a_time(hub, si, prs) -> list[float]:
    """Bus -> trigger at Jenkins, ms, one message at a time."""
    out = []
    for pr in prs:
        t0 = time.time()
        hub.publish(messages.pr_new(pr))
        out.append((si.jenkins.arrival_of(pr["id"], 30) - t0) * 1e3)
    return out


def burst(hub, si, prs) -> float:
    """Seconds from the first message of a burst to the last trigger at Jenkins."""
    t0 = time.time()
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    ids = {pr["id"] for pr in prs}
    si.jenkins.wait_for(lambda arrivals: ids <= {p for _, p in arrivals}, 120, "the burst's triggers")
    return max(t for t, p in si.jenkins.arrivals if p in ids) - t0


def stats(values: list[float]) -> str:
    return f"{len(values):6d}  p50 {pct(values, 50):7.2f}  p99 {pct(values, 99):7.2f}  max {max(values):7.2f}" if values else "     0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    rng = random.Random(15)
    work = Path(tempfile.mkdtemp(prefix="poormanci-bench-web-"))
    n_msgs = 3 * size.latency + 2 * size.burst
    with StandIns(n_msgs) as si:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = bench_config(si.jenkins, si.pagure, work / "state", web={"listen": f"127.0.0.1:{port}", "public_url": base})
        log(f"seeding {size.runs} runs")
        t0 = time.time()
        seeded = seed(work / "state", config, size.runs, rng)
        log(f"seeded in {time.time() - t0:.1f} s")
        hub = BenchHub(config, work / "hub")
        try:
            hub.launch().ready(si.jenkins, si.probe_pr)
            paths = endpoints(seeded)
            session = requests.Session()
            cold = timed_get(session, base + "/")
            log(f"idle page times (load {loadavg()})")
            idle = measure(base, paths, size.requests)
            sizes = [size.latency] * 3 + [size.burst] * 2
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            chunks = iter([si.prs[s:s + n] for s, n in zip(starts, sizes)])
            log("hub latency, nobody reading pages")
            alone = one_at_a_time(hub, si, next(chunks))
            log("hub latency, two readers, a page every 100 ms each")
            with Readers(base, paths, pause=PACED):
                paced = one_at_a_time(hub, si, next(chunks))
            log("hub latency, two readers as fast as they can")
            with Readers(base, paths) as readers_latency:
                loaded = one_at_a_time(hub, si, next(chunks))
            burst_alone = burst(hub, si, next(chunks))
            log("burst with two readers")
            with Readers(base, paths) as readers_burst:
                burst_loaded = burst(hub, si, next(chunks))
            errors = readers_latency.errors + readers_burst.errors
        finally:
            hub.close()
    print(f"\nStatus page with {size.runs} runs in the store (machine load {loadavg()}); times in ms\n")
    print(f"first '/' after start (charts drawn): {cold:.1f} ms\n")
    print(f"{'':24s}  {'idle':^44s}   {'while messages are handled (2 flat-out readers)':^44s}")
    during = {name: readers_latency.times[name] + readers_burst.times[name] for name in paths}
    for name in paths:
        print(f"{name:24s}  {stats(idle[name])}   {stats(during[name])}")
    print("\nHub: bus message -> trigger at Jenkins, ms")
    print(f"{'one at a time, nobody reading':34s}  {stats(alone)}")
    print(f"{'one at a time, 2 paced readers':34s}  {stats(paced)}")
    print(f"{'one at a time, 2 flat-out readers':34s}  {stats(loaded)}")
    print(f"burst of {size.burst}: all triggered in {burst_alone:.2f} s alone, {burst_loaded:.2f} s with 2 flat-out readers")
    if errors:
        print(f"\n{len(errors)} page errors, first: {errors[0]}")
        return 1
    page_p99 = max(pct(idle[n], 99) for n in paths if n not in ("/metrics", "/healthz"))
    metrics_p99 = pct(idle["/metrics"], 99)
    print(f"\ngoals (idle): page p99 {page_p99:.1f} ms (<= {GOALS['page_p99_ms']}), "
          f"/metrics p99 {metrics_p99:.1f} ms (<= {GOALS['metrics_p99_ms']})")
    missed = page_p99 > GOALS["page_p99_ms"] or metrics_p99 > GOALS["metrics_p99_ms"]
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
