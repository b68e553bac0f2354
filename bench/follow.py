"""Following without the bus message (issue 17): build end → final flag,
and what it costs Jenkins, per-job polling beside the per-build backoff
it replaces; then with the bus message.

    .venv/bin/python bench/follow.py --old-core DIR [--scale 0.2] [--output BENCHMARKS.md]

100 builds over 10 jobs (10 PRs of one project, each building the 10
jobs), durations spread from 5 s to 5 min, multiplied by ``--scale`` to
keep the run short (the per-build backoff then looks *better* than it would
with real durations: its delay grows with the build's age). Everything runs
through the real ``fedmsg-hub`` and the stand-ins of tests/. ``--old-core``:
a directory with the ``poormanci`` package of the commit before per-job
following (its python/poormanci plus its built _core.abi3.so), put first on
the hub's PYTHONPATH; without it that column is skipped. The section, with
bench/FOLLOW-NOTES.md (hand-written) after the table, is appended to
``--output`` (replacing an earlier one).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

import messages  # noqa: E402
from harness import Hub, make_config, wait_until  # noqa: E402
from standins import FakeJenkins, FakePagure  # noqa: E402

N_JOBS, N_PRS = 10, 10
SHORTEST, LONGEST = 5.0, 300.0
HEADING = "## Following builds: per job vs per build (issue 17)"


class TimedJenkins(FakeJenkins):
    """Each build runs for its planned duration ({(job, number): seconds})."""

    def __init__(self, jobs, plan, **kw):
        super().__init__(jobs, **kw)
        self.plan = plan

    def _advance(self):
        super()._advance()
        for key, build in self._builds.items():
            if key in self.plan:
                build.duration = self.plan[key]

    def ends(self) -> dict:
        with self._lock:
            self._advance()
            return {key: b.ends_at() for key, b in self._builds.items()}


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]


def durations(scale: float) -> list[float]:
    """N_JOBS * N_PRS durations, log-spaced from SHORTEST to LONGEST, scaled."""
    n = N_JOBS * N_PRS
    return [scale * SHORTEST * (LONGEST / SHORTEST) ** (k / (n - 1)) for k in range(n)]


def run(variant: str, scale: float, old_core: Path | None, work: Path) -> dict:
    jobs = {f"job{j}": f"T{j}" for j in range(N_JOBS)}
    spread = durations(scale)
    # Build n of job j is PR n's; each job gets short and long builds.
    plan = {(f"job{j}", n): spread[((n - 1) * N_JOBS + j * 7) % len(spread)] for j in range(N_JOBS) for n in range(1, N_PRS + 1)}
    bus = variant == "bus"
    # left_ttl: Jenkins keeps a left queue item 5 minutes (the stand-in's default is shorter, for tests).
    with TimedJenkins(jobs, plan, result_window=0.0 if bus else 0.3, left_ttl=300.0) as jenkins, FakePagure() as pagure:
        jenkins_cfg = {"timeout": 10}
        if variant == "old":
            jenkins_cfg.update(poll_min=5.0, poll_max=60.0)  # its defaults
        config = make_config(jenkins, pagure, state_dir=work / variant / "state",
                             projects={"pungi": [{"job": j, "token": t} for j, t in jobs.items()]}, jenkins=jenkins_cfg)
        for key in ("poll_min", "poll_max", "poll_interval"):
            if not (variant == "old" and key != "poll_interval"):
                config["poormanci.jenkins"].pop(key, None)
        env = {"PYTHONPATH": str(old_core)} if variant == "old" else None
        hub = Hub(config, work / variant / "hub", env=env).start()
        published: dict = {}
        stop = threading.Event()

        def announce():
            # jenkins-fedmsg-emit: the message as each build ends.
            while not stop.is_set():
                now = time.time()
                for key, end in jenkins.ends().items():
                    if end <= now and key not in published:
                        published[key] = time.time()
                        hub.publish(jenkins.bus_message(key[0], key[1], "passed"))
                stop.wait(0.002)

        try:
            start = time.time()
            for n in range(1, N_PRS + 1):
                hub.publish(messages.pr_new(pagure.add_pr("pungi", n)))
            if bus:
                threading.Thread(target=announce, daemon=True).start()
            finals = lambda: [h for h in pagure.flag_history if h["data"]["status"] != "pending"]  # noqa: E731
            wait_until(lambda: len(finals()) >= N_JOBS * N_PRS, timeout=900, interval=0.5,
                       message=f"{variant}: 100 final flags")
        finally:
            stop.set()
            hub.close()
        ends = jenkins.ends()
        lat, lost = [], 0
        for h in finals():
            m = re.search(r"/job/(job\d+)/(\d+)/$", h["data"]["url"])
            if not m:  # not a build's result
                lost += 1
                continue
            key = (m.group(1), int(m.group(2)))
            lat.append(h["time"] - (published[key] if bus else ends[key]))
        last = max(h["time"] for h in finals())
        reqs = [r for r in jenkins.requests if start <= r.time <= last]
        follow = [r for r in reqs if r.extra.get("kind") not in ("trigger", "crumb", "root")]
        per_second: dict[int, int] = {}
        for r in follow:
            per_second[int(r.time - start)] = per_second.get(int(r.time - start), 0) + 1
        # The goal's bound: one request per job with a build in flight per
        # 2 s (the default poll_interval), from the first trigger to its last build's end.
        last_end = {}
        for (job, _), end in ends.items():
            last_end[job] = max(last_end.get(job, 0.0), end)
        bound = sum(end - start for end in last_end.values()) / 2.0
        return {
            "bound": bound,
            "variant": variant, "p50": statistics.median(lat), "p99": pct(lat, 99), "max": max(lat),
            "span": last - start, "requests": len(follow), "rate": len(follow) / (last - start),
            "peak": max(per_second.values(), default=0),
            "reports": len(finals()), "not_results": lost,
        }


def table(results: list[dict], scale: float) -> str:
    label = {"new": "per job, poll_interval 2 s (no bus message)",
             "old": "per build, backoff 5 s → 60 s (no bus message)",
             "bus": "per job + bus message at each build end"}
    rows = ["| following | build end → flag p50 | p99 | max | follow requests (total) | bound: 1 per job in flight per 2 s | per second (mean / peak) | run |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        unit = 1000 if r["variant"] == "bus" else 1
        fmt = (lambda v: f"{v * 1000:.0f} ms") if unit == 1000 else (lambda v: f"{v:.2f} s")
        rows.append(f"| {label[r['variant']]} | {fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['max'])} | {r['requests']} | "
                    f"{r['bound']:.0f} | {r['rate']:.2f} / {r['peak']} | {r['span']:.0f} s |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-core", type=Path)
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--variants", default="new,old,bus")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="poormanci-follow-") as tmp:
        for variant in args.variants.split(","):
            if variant == "old" and not args.old_core:
                continue
            r = run(variant, args.scale, args.old_core, Path(tmp))
            print(r, flush=True)
            results.append(r)
    text = (f"{HEADING}\n\n{N_JOBS * N_PRS} builds over {N_JOBS} jobs, durations 5 s … 5 min × {args.scale} "
            f"({SHORTEST * args.scale:g} s … {LONGEST * args.scale:g} s), queue 0 s; all in one run of "
            f"`bench/follow.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Follow requests: every "
            "request to Jenkins but the triggers, from the first trigger to the last final flag. With the bus "
            "message, latency counts from the message's publication.\n\n" + table(results, args.scale) + "\n")
    notes = BENCH / "FOLLOW-NOTES.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    print(text)
    if args.output:
        old = args.output.read_text() if args.output.exists() else ""
        old = re.sub(rf"\n*{re.escape(HEADING)}.*?(?=\n## |\Z)", "", old, flags=re.S)
        args.output.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
