"""poormanci benchmarks (issue 7): a slow Jenkins must not hold up the bus,
a burst is handled at once, the core costs next to nothing per message.

    .venv/bin/python bench/run.py            # full figures, written to BENCHMARKS.md
    .venv/bin/python bench/run.py --quick    # small sizes (CI), < 2 minutes

Everything that involves the bus runs through the real ``fedmsg-hub`` (the
harness in tests/harness.py, stand-ins from tests/standins). ``consume()``
is timed from the outside by bench/probe/sitecustomize.py, put on the hub's
PYTHONPATH for those runs only. The synchronous baseline (bench/baseline.py)
runs through the same hub with ``--with-consumers baseline:Baseline``.
Prints a table and writes it, with the machine and the method, to
BENCHMARKS.md (``--quick``: to a file in the temp dir unless ``--output``).
Exits non-zero when a run fails (a hub that does not start, a message lost),
not when a goal is missed, unless ``--check`` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import zmq  # noqa: E402

import messages  # noqa: E402
from harness import Hub, make_config, wait_until  # noqa: E402
from standins import FakeJenkins, FakePagure  # noqa: E402

JOBS = {"pungi-pr": "BEEFCAFE", "folder/python-foo": "F00"}
CONSUMER = "poormanci.consumer:Integrator"
PROBE_PR = 999_999  # the PR the readiness probe opens; never one of the measured ones
LOG_FORMAT = "%(created).6f %(levelname)s %(name)s [%(threadName)s] %(message)s"

FULL = SimpleNamespace(repeats=3, burst=200, latency=1000, warmup=20, cost=20_000, cost_batch=2000, memory=100_000)
QUICK = SimpleNamespace(repeats=1, burst=20, latency=100, warmup=10, cost=2000, cost_batch=1000, memory=2000)

GOALS = {
    "burst_s": 5.0,           # all triggers within 5 s of the last message
    "speedup": 20.0,          # ≥ 20× the synchronous baseline
    "consume_ms": 1.0,        # no consume() over 1 ms
    "p50_ms": 5.0, "p99_ms": 25.0,
    "call_us": 20.0,          # per message across the boundary
    "vs_python": 0.5,         # at most half the pure-Python time
    "plus_mb": 15.0, "growth_mb": 5.0,
}


def log(text: str):
    print(text, file=sys.stderr, flush=True)


def pct(values, p: float) -> float:
    """The p-th percentile (nearest rank) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# -- stand-ins and hub ---------------------------------------------------------

class Arrivals:
    """Trigger arrivals at Jenkins: (time.time() when the request reached the
    stand-in's WSGI app, before any ``slow`` pause; the PR id from its cause)."""

    def _init_arrivals(self):
        self.arrivals: list[tuple[float, int | None]] = []
        self.arrived = threading.Condition()

    def _arrive(self, t: float, pr_id: int | None):
        with self.arrived:
            self.arrivals.append((t, pr_id))
            self.arrived.notify_all()

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self.arrivals):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                         f"({len(self.arrivals)} triggers arrived)")
                self.arrived.wait(left)

    def arrival_of(self, pr_id: int, timeout: float) -> float:
        found = []

        def seen(arrivals):
            found[:] = [t for t, p in arrivals if p == pr_id]
            return found

        self.wait_for(seen, timeout, f"the trigger of PR {pr_id}")
        return found[0]


class Jenkins(Arrivals, FakeJenkins):
    """FakeJenkins that also notes when each trigger arrives."""

    def __init__(self, *args, on_arrival=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_arrivals()
        self.on_arrival = on_arrival or self._arrive

    def dispatch(self, request, rec):
        if request.method == "POST" and request.path.endswith("/buildWithParameters"):
            m = re.search(r"/pull-request/(\d+)", request.form.get("cause", ""))
            self.on_arrival(rec.time, int(m.group(1)) if m else None)
        return super().dispatch(request, rec)


def pr_commit(pr_id: int) -> str:
    """The same PR, with the same head, in the stand-in and in the messages."""
    return f"{pr_id:040x}"


def serve(kind: str, arg: str):
    """Child process mode: one stand-in, in a process of its own, so that
    neither the benchmark (publishing, timing) nor the other stand-in shares
    its GIL. Prints its address as JSON, then (Jenkins) one line per trigger
    arrival; exits when stdin closes."""
    out = threading.Lock()

    def line(text: str):
        with out:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    if kind == "jenkins":
        server = Jenkins(JOBS, slow=float(arg), on_arrival=lambda t, p: line(f"{t!r} {p if p is not None else '-'}"))
        server.start()
        line(json.dumps({"url": server.url, "port": server.port}))
    else:
        server = FakePagure()
        server.start()
        for i in range(1, int(arg) + 1):
            server.add_pr("pungi", i, author="alice", commit=pr_commit(i))
        server.add_pr("pungi", PROBE_PR, author="alice", commit=pr_commit(PROBE_PR))
        line(json.dumps({"url": server.url, "port": server.port, "token": server.token, "user": server.user,
                         "prefix": server.prefix}))
    sys.stdin.read()
    server.stop()


class Remote:
    def __init__(self, kind: str, arg):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(arg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.__dict__.update(json.loads(self.proc.stdout.readline()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class RemoteJenkins(Arrivals, Remote):
    user = api_token = None

    def __init__(self, slow: float = 0.0):
        Remote.__init__(self, "jenkins", slow)
        self._init_arrivals()
        threading.Thread(target=self._read, name="jenkins-arrivals", daemon=True).start()

    def _read(self):
        for text in self.proc.stdout:
            t, p = text.split()
            self._arrive(float(t), None if p == "-" else int(p))


class StandIns:
    """Stand-in Jenkins and Pagure in child processes (PRs 1..n_prs and
    PROBE_PR of project pungi), and ``prs``: the same PRs as Pagure's API
    shows them, to build the bus messages from."""

    def __init__(self, n_prs: int, *, slow: float = 0.0):
        self.n_prs, self.slow = n_prs, slow

    def __enter__(self):
        self.jenkins = RemoteJenkins(self.slow)
        self.pagure = Remote("pagure", self.n_prs)
        self.shaper = FakePagure()  # never started: builds PR JSON with the child's address
        self.shaper._port = self.pagure.port
        self.prs = [self.shaper.add_pr("pungi", i, author="alice", commit=pr_commit(i))
                    for i in range(1, self.n_prs + 1)]
        self.probe_pr = self.shaper.add_pr("pungi", PROBE_PR, author="alice", commit=pr_commit(PROBE_PR))
        return self

    def __exit__(self, *exc):
        self.jenkins.close()
        self.pagure.close()

    def unconfigured(self, comments: int) -> dict:
        """comment.added on a project poormanci has no jobs for, ``comments`` comments long."""
        self.shaper.add_pr("unconfigured", 1, author="mallory")
        for k in range(comments - 1):
            self.shaper.add_comment("unconfigured", 1, f"comment {k}: " + "looks fine to me " * 8, "bob")
        return messages.pr_comment(self.shaper.pr("unconfigured", 1), "LGTM", "carol")


class BenchHub(Hub):
    """The real fedmsg-hub as the tests run it, plus: extra command-line
    arguments and environment (the probe), production log levels with
    microsecond timestamps, a publisher that never drops (SNDHWM 0)."""

    def __init__(self, config: dict, workdir: Path, *, consumer: str = CONSUMER, args=(),
                 env: dict | None = None, level: str = "INFO"):
        super().__init__(config, workdir, consumer=consumer, args=args, env=env)
        self.probe_out: Path | None = None
        self._pub.setsockopt(zmq.SNDHWM, 0)  # applies to the hub's connection, made later
        override = {"logging": {"formatters": {"plain": {"format": LOG_FORMAT}},
                                "loggers": {"poormanci": {"level": level}, "_core": {"level": level},
                                            "baseline": {"level": level}}}}
        # fedmsg merges fedmsg.d/*.py in name order, dicts recursively.
        (self.workdir / "fedmsg.d" / "zz_bench.py").write_text(f"config = {override!r}\n")

    def with_probe(self, target: str) -> "BenchHub":
        self.probe_out = self.workdir / "probe.json"
        paths = [str(BENCH / "probe")] + ([str(BENCH)] if target.startswith("baseline:") else [])
        self.extra_env.update(PYTHONPATH=os.pathsep.join(paths), POORMANCI_BENCH_PROBE=target,
                              POORMANCI_BENCH_PROBE_OUT=str(self.probe_out))
        return self

    def launch(self, timeout: float = 60.0, *, enabled: bool = True) -> "BenchHub":
        """Hub.start without its probe message: ``ready()`` probes with a PR,
        and a hub without poormanci (the baseline, ``enabled=False``) logs none."""
        return self.start(timeout, probe=False, enabled=enabled)

    def ready(self, jenkins: Arrivals, probe_pr: dict, timeout: float = 30.0):
        """zmq drops what is sent before the hub's SUB socket has joined:
        publish the probe PR's pull-request.new until its trigger arrives."""
        deadline = time.monotonic() + timeout
        while True:
            self.publish(messages.pr_new(probe_pr))
            try:
                jenkins.arrival_of(probe_pr["id"], 0.3)
                return self
            except AssertionError:
                if not self.alive() or time.monotonic() > deadline:
                    raise AssertionError(f"the hub never triggered the probe PR\n{self.log_tail()}")

    def send_raw(self, topic: bytes, body: bytes):
        self._pub.send_multipart([topic, body])

    def probe_records(self, timeout: float = 10.0) -> list:
        """Every consume() call so far: (entered, duration_ns, msg_id)."""
        assert self.probe_out is not None
        self.probe_out.unlink(missing_ok=True)
        Path(f"{self.probe_out}.request").touch()
        wait_until(lambda: self.probe_out.exists(), timeout, "the probe's records")
        return json.loads(self.probe_out.read_text())["records"]

    def rss_kb(self) -> dict:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}


def keep_follow_section(output: Path, text: str) -> str:
    """bench/follow.py's section of the report (its own run) survives this one."""
    old = output.read_text() if output.exists() else ""
    kept = re.search(r"\n## Following builds: per job vs per build.*?(?=\n## |\Z)", old, flags=re.S)
    return text.rstrip("\n") + "\n" + kept.group(0) if kept else text


def bench_config(jenkins, pagure, /, state_dir: Path, **overrides) -> dict:
    """The tests' config, but a followed job first looked at 5 s after its
    trigger (the tests look every 0.2 s), as the figures below assume."""
    jenkins_over = {"poll_interval": 5.0, **overrides.pop("jenkins", {})}
    return make_config(jenkins, pagure, state_dir=state_dir, jenkins=jenkins_over, **overrides)


# -- 1. burst on a slow Jenkins -------------------------------------------------

def burst_once(work: Path, n: int, kind: str, concurrency: int | None, slow: float) -> dict:
    with StandIns(n, slow=slow) as si:
        jenkins_over = {"concurrency": concurrency} if concurrency else {}
        config = bench_config(si.jenkins, si.pagure, work / "state", jenkins=jenkins_over)
        if kind == "baseline":
            config["baseline.enabled"] = True
            hub = BenchHub(config, work, consumer="baseline:Baseline",
                           args=["--with-consumers", "baseline:Baseline"]).with_probe("baseline:Baseline")
        else:
            hub = BenchHub(config, work).with_probe(CONSUMER)
        try:
            hub.launch().ready(si.jenkins, si.probe_pr)
            time.sleep(1.0 + slow)  # let the probe's own work settle
            envs = [messages.pr_new(pr) for pr in si.prs]
            ids = {e["msg_id"] for e in envs}
            load = loadavg()
            t_first = time.time()
            for env in envs:
                hub.publish(env)
            t_last = time.time()
            si.jenkins.wait_for(lambda a: len({p for _, p in a if p is not None and p <= n}) >= n,
                                timeout=30.0 + n * slow * 1.5, what=f"{n} triggers")
            arrivals = sorted(t for t, p in si.jenkins.arrivals if p is not None and p <= n)
            wait_until(lambda: len([r for r in hub.probe_records() if r[2] in ids]) >= n,
                       30.0 + slow * 2, "every consume() call", interval=0.2)
            records = [r for r in hub.probe_records() if r[2] in ids]
        finally:
            hub.close()
    return {"load": load, "publish_ms": (t_last - t_first) * 1e3, "last_to_all_s": arrivals[-1] - t_last,
            "first_to_all_s": arrivals[-1] - t_first, "first_trigger_s": arrivals[0] - t_first,
            "triggers": len(arrivals), "took_ms": [r[1] / 1e6 for r in records]}


def burst(work: Path, n: int, *, kind: str, concurrency: int | None = None, slow: float = 0.5,
          repeats: int = 1) -> dict:
    runs = []
    for i in range(repeats):
        tag = f"{kind}-c{concurrency or 'default'}-{n}-{i}"
        log(f"burst: {tag} (load {loadavg()})")
        runs.append(burst_once(work / tag, n, kind, concurrency, slow))
    took = [t for r in runs for t in r["took_ms"]]
    mid = sorted(runs, key=lambda r: r["last_to_all_s"])[len(runs) // 2]  # the median run
    return {"n": n, "kind": kind, "concurrency": concurrency or 32, "repeats": repeats,
            "load": ", ".join(r["load"] for r in runs),
            **{k: mid[k] for k in ("publish_ms", "last_to_all_s", "first_to_all_s", "first_trigger_s")},
            "last_to_all_each": [r["last_to_all_s"] for r in runs],
            "triggers": [r["triggers"] for r in runs], "consume_calls": len(took),
            "consume_max_ms": max(took), "consume_max_each": [max(r["took_ms"]) for r in runs],
            "consume_p50_ms": pct(took, 50), "consume_p99_ms": pct(took, 99),
            "consume_over_1ms": sum(1 for t in took if t > 1.0)}


# -- 2. latency -----------------------------------------------------------------

def standin_floor(jenkins: Arrivals, port: int, n: int = 200) -> list[float]:
    """The same POST sent straight from this process (http.client): what the
    stand-in (and the pipe that reports its arrivals) adds, whoever the client is."""
    import http.client
    lat = []
    for i in range(n):
        pr_id = 800_000 + i
        body = (f"token=BEEFCAFE&cause=http%3A%2F%2Fx%2Fpungi%2Fpull-request%2F{pr_id}"
                "&REPO=r&BRANCH=b&BRANCH_TO=m")
        t0 = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/job/pungi-pr/buildWithParameters", body,
                     {"Content-Type": "application/x-www-form-urlencoded"})
        conn.getresponse().read()
        conn.close()
        lat.append((jenkins.arrival_of(pr_id, 5) - t0) * 1e3)
    return lat


def latency(work: Path, n: int, warmup: int) -> dict:
    log(f"latency: {n} messages one at a time (load {loadavg()})")
    with StandIns(n + warmup) as si:
        floor = standin_floor(si.jenkins, si.jenkins.port)
        hub = BenchHub(bench_config(si.jenkins, si.pagure, work / "latency" / "state"),
                       work / "latency").with_probe(CONSUMER)
        try:
            hub.launch().ready(si.jenkins, si.probe_pr)
            time.sleep(1.0)
            load = loadavg()
            sent: dict[str, float] = {}
            arrived: dict[str, float] = {}
            t_start = time.time()
            for i, pr in enumerate(si.prs):
                env = messages.pr_new(pr)
                t0 = time.time()
                hub.publish(env)
                t1 = si.jenkins.arrival_of(pr["id"], 15)
                if i >= warmup:
                    sent[env["msg_id"]], arrived[env["msg_id"]] = t0, t1
            elapsed = time.time() - t_start
            records = {r[2]: r for r in hub.probe_records() if r[2] in sent}
            decided = {}
            for m in re.finditer(r"^(\d+\.\d+) INFO poormanci \[[^\]]*\] msg (\S+) \S+: trigger ",
                                 hub.log_text(), re.M):
                decided[m.group(2)] = float(m.group(1))
        finally:
            hub.close()
    ids = list(sent)
    total = [(arrived[i] - sent[i]) * 1e3 for i in ids]
    # Before the first runs' follow-ups (first poll 5 s after their trigger) start.
    early = [(arrived[i] - sent[i]) * 1e3 for i in ids if sent[i] < t_start + 4.5]
    seg = {"bus_to_consume": [], "consume_to_decided": [], "decided_to_jenkins": []}
    for i in ids:
        if i in records and i in decided:
            seg["bus_to_consume"].append((records[i][0] - sent[i]) * 1e3)
            seg["consume_to_decided"].append((decided[i] - records[i][0]) * 1e3)
            seg["decided_to_jenkins"].append((arrived[i] - decided[i]) * 1e3)
    return {"n": len(total), "load": load, "p50": pct(total, 50), "p99": pct(total, 99), "max": max(total),
            "mean": statistics.fmean(total), "seconds": elapsed,
            "early": {"n": len(early), "p50": pct(early, 50), "p99": pct(early, 99)} if early else None,
            "segments": {k: {"p50": pct(v, 50), "p99": pct(v, 99), "max": max(v)} for k, v in seg.items() if v},
            "segments_n": len(seg["bus_to_consume"]),
            "floor": {"p50": pct(floor, 50), "p99": pct(floor, 99)}}


# -- 3. cost per message across the boundary ------------------------------------

def cost(work: Path, n: int, batch: int) -> dict:
    import logging

    from poormanci._core import Core
    from pure_python import Rules

    log(f"cost: {n} calls per kind (load {loadavg()})")
    sustained_n = min(n, 10_000)
    with StandIns(n + sustained_n) as si:
        config = bench_config(si.jenkins, si.pagure, work / "cost" / "state")
        # Production logging: the poormanci logger at INFO, to a file.
        (work / "cost").mkdir(parents=True, exist_ok=True)
        plog = logging.getLogger("poormanci")
        plog.handlers[:] = [logging.FileHandler(work / "cost" / "core.log")]
        plog.setLevel(logging.INFO)
        plog.propagate = False

        # The messages, built before timing: PR dicts as Pagure sends them.
        new_prs = [messages.pr_new(pr) for pr in si.prs]
        relevant, relevant_more = new_prs[:n], new_prs[n:]
        template = si.unconfigured(200)
        n_comments = len(template["msg"]["pullrequest"]["comments"])

        def fresh(count):
            return [{**template, "msg_id": messages.new_msg_id()} for _ in range(count)]
        irrelevant, irrelevant_more = fresh(n), fresh(sustained_n)

        def noop(topic, envelope):
            return None

        def timed(fn, envs, *, barrier=None) -> tuple[list[int], int]:
            """Wall time of each call (ns), and this thread's CPU time for all of them."""
            out, cpu = [], 0
            pc, tt = time.perf_counter_ns, time.thread_time_ns
            for start in range(0, len(envs), batch):
                if barrier:
                    barrier()
                c0 = tt()
                for env in envs[start:start + batch]:
                    topic = env["topic"]
                    t = pc()
                    fn(topic, env)
                    out.append(pc() - t)
                cpu += tt() - c0
            if barrier:
                barrier()
            return out, cpu

        def figures(wall, cpu, oh_wall, oh_cpu):
            return {"p50_us": (pct(wall, 50) - oh_wall) / 1e3, "mean_us": (statistics.fmean(wall) - oh_wall) / 1e3,
                    "p99_us": (pct(wall, 99) - oh_wall) / 1e3, "cpu_us": (cpu / len(wall) - oh_cpu) / 1e3,
                    "over_100us": sum(1 for w in wall if w > 100_000)}

        load = loadavg()
        result: dict = {"n": n, "load": load, "comments": n_comments}
        gc.collect()
        gc.disable()
        try:
            oh_wall, oh_cpu = timed(noop, irrelevant)
            oh_wall, oh_cpu = pct(oh_wall, 50), oh_cpu / len(irrelevant)
            result["overhead_ns"] = oh_wall
            # Pure Python first, while no core exists: nothing else runs in this process.
            for kind, envs in (("relevant", relevant), ("irrelevant", irrelevant)):
                result[kind] = {"py": figures(*timed(Rules(config).handle, envs), oh_wall, oh_cpu)}
            core = Core(config)
            barrier = lambda: core.wait_idle(0.0)  # noqa: E731 -- answers once the engine read all before it
            barrier()
            # Evidence: how often the core's threads enter Python for a log line
            # (pyo3-log asks logging's isEnabledFor, under the GIL, for every record).
            entries: dict[str, int] = {}
            enabled_for = plog.isEnabledFor

            def counting(level):
                thread = "this thread" if threading.current_thread() is threading.main_thread() else "core threads"
                key = f"{logging.getLevelName(level)} from {thread}"
                entries[key] = entries.get(key, 0) + 1
                return enabled_for(level)

            # Irrelevant first: the relevant ones leave work running for a while (triggers, flags).
            for kind, envs, more in (("irrelevant", irrelevant, irrelevant_more),
                                     ("relevant", relevant, relevant_more)):
                result[kind]["rust"] = figures(*timed(core.handle, envs, barrier=barrier), oh_wall, oh_cpu)
                # Back to back, no pause: what the whole core (engine thread included) sustains.
                barrier()
                t0 = time.perf_counter()
                for env in more:
                    core.handle(env["topic"], env)
                barrier()
                result[kind]["sustained_us"] = (time.perf_counter() - t0) / len(more) * 1e6
                if kind == "irrelevant":
                    probe = fresh(2000)
                    plog.isEnabledFor = counting
                    for env in probe:
                        core.handle(env["topic"], env)
                    barrier()
                    del plog.isEnabledFor
                    result["log_checks_per_irrelevant"] = {k: v / len(probe) for k, v in entries.items()}
            core.close(5.0)
        finally:
            gc.enable()
        return result


# -- 4. memory --------------------------------------------------------------------

def memory(work: Path, n: int, settle: float = 3.0) -> dict:
    log(f"memory: {n} messages (load {loadavg()})")
    chunk = 100  # 99 comments on an unconfigured project, then one new PR on pungi
    n_relevant = n // chunk
    with StandIns(n_relevant) as si:
        jenkins = si.jenkins
        template = si.unconfigured(20)
        marker = "MSGID-" + "0" * 30
        body = json.dumps({**template, "msg_id": marker})
        topic = template["topic"].encode()

        def feed(hub: BenchHub, nth: int) -> tuple[list, float]:
            """All n messages, a chunk at a time; the next chunk once this
            one's new PR was triggered (its nth trigger; moksha and the core
            handle messages in order)."""
            curve, sent, t0 = [], 0, time.time()
            for pr in si.prs:
                for _ in range(chunk - 1):
                    hub.send_raw(topic, body.replace(marker, messages.new_msg_id()).encode())
                hub.publish(messages.pr_new(pr))
                sent += chunk
                jenkins.wait_for(lambda a: sum(1 for t, p in a if p == pr["id"]) >= nth, 60,
                                 f"the trigger of PR {pr['id']}")
                if sent % max(chunk, n // 10) == 0:
                    curve.append((sent, hub.rss_kb()["VmRSS"]))
            return curve, time.time() - t0

        # Without the consumer: poormanci.enabled False (its module is still imported).
        config = bench_config(jenkins, si.pagure, work / "mem-off" / "state", enabled=False)
        hub = BenchHub(config, work / "mem-off")
        try:
            hub.launch(enabled=False)
            time.sleep(settle)
            off = hub.rss_kb()
        finally:
            hub.close()

        config = bench_config(jenkins, si.pagure, work / "mem-on" / "state")
        hub = BenchHub(config, work / "mem-on")
        try:
            hub.launch().ready(jenkins, si.probe_pr)
            time.sleep(settle)
            idle = hub.rss_kb()
            load = loadavg()
            curve, elapsed = feed(hub, 1)
            # Every chunk's new PR was triggered, so every message was read
            # (in order); the engine records the msg_id of each relevant one
            # (the unconfigured-project comments are dropped in handle()).
            db = work / "mem-on" / "state" / "poormanci.sqlite3"

            def seen() -> int:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    return conn.execute("SELECT count(*) FROM seen").fetchone()[0]
            wait_until(lambda: seen() >= n_relevant, 30, f"{n_relevant} msg_ids recorded", interval=0.2)
            n_seen = seen()
            # The runs' follow-ups (poll at 5 s, report, flags) finish, then measure.
            time.sleep(6.0 + settle)
            after = hub.rss_kb()
        finally:
            hub.close()

        # Control: the same messages through the same hub with the plain
        # Python baseline consumer: what the hub itself grows by.
        config = bench_config(jenkins, si.pagure, work / "mem-base" / "state", enabled=False)
        config["baseline.enabled"] = True
        hub = BenchHub(config, work / "mem-base", consumer="baseline:Baseline",
                       args=["--with-consumers", "baseline:Baseline"], env={"PYTHONPATH": str(BENCH)})
        try:
            hub.launch().ready(jenkins, si.probe_pr)
            time.sleep(settle)
            base_idle = hub.rss_kb()
            base_curve, base_elapsed = feed(hub, 2)  # each PR's second trigger
            time.sleep(settle)
            base_after = hub.rss_kb()
        finally:
            hub.close()
    return {"n": n, "relevant": n_relevant, "load": load, "off_kb": off["VmRSS"], "idle_kb": idle["VmRSS"],
            "after_kb": after["VmRSS"], "peak_kb": after["VmHWM"], "curve": curve, "seconds": elapsed,
            "seen": n_seen, "base_idle_kb": base_idle["VmRSS"], "base_after_kb": base_after["VmRSS"],
            "base_curve": base_curve, "base_seconds": base_elapsed}


# -- report ---------------------------------------------------------------------

def machine() -> dict:
    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or "n/a"
        except (OSError, subprocess.SubprocessError):
            return "n/a"
    cpu = "n/a"
    try:
        cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    mem = "n/a"
    try:
        kb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    commit = run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = run("git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "python", "Cargo.toml", "Cargo.lock")
    core = ROOT / "python" / "poormanci" / "_core.abi3.so"
    built = datetime.fromtimestamp(core.stat().st_mtime).strftime("%H:%M") if core.exists() else "n/a"
    source = f"commit {commit}" + (" + uncommitted changes under src/ or python/" if dirty != "n/a" else "")
    return {"nproc": run("nproc"), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "source": f"{source}; core built at {built}",
            "python": platform.python_version(), "rustc": run("rustc", "--version"),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def ok(good: bool) -> str:
    return "met" if good else "MISSED"


def build_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(measure, figure, goal, status)."""
    rows = []
    b, base = r.get("burst"), r.get("baseline")
    if b:
        runs = f" (median of {b['repeats']} runs)" if b["repeats"] > 1 else ""
        rows.append((f"Burst {b['n']} PRs, Jenkins 0.5 s/trigger, concurrency {b['concurrency']}: last message → "
                     f"last trigger{runs}", f"{b['last_to_all_s']:.2f} s", f"≤ {GOALS['burst_s']:.0f} s",
                     ok(b["last_to_all_s"] <= GOALS["burst_s"])))
        rows.append((f"  longest consume() of {b['consume_calls']} (p50 / p99)",
                     f"{b['consume_max_ms'] * 1e3:.0f} µs ({b['consume_p50_ms'] * 1e3:.0f} / {b['consume_p99_ms'] * 1e3:.0f} µs)",
                     f"≤ {GOALS['consume_ms']:.0f} ms", ok(b["consume_max_ms"] <= GOALS["consume_ms"])))
    b64 = r.get("burst64")
    if b64:
        rows.append((f"  same, concurrency {b64['concurrency']}", f"{b64['last_to_all_s']:.2f} s "
                     f"(consume() max {b64['consume_max_ms'] * 1e3:.0f} µs)", "(the knob)",
                     "" if b64["consume_max_ms"] <= GOALS["consume_ms"] else "consume() MISSED"))
    if base:
        rows.append((f"Baseline (HTTP inside consume()), {base['n']} PRs: last message → last trigger",
                     f"{base['last_to_all_s']:.1f} s", "", ""))
        rows.append(("  longest consume()", f"{base['consume_max_ms']:.0f} ms", "", ""))
        if b and b["n"] == base["n"]:
            speed = base["first_to_all_s"] / b["first_to_all_s"]
            rows.append(("  speed-up, first message → last trigger", f"{speed:.0f}×",
                         f"≥ {GOALS['speedup']:.0f}×", ok(speed >= GOALS["speedup"])))
    lat = r.get("latency")
    if lat:
        rows.append((f"Latency bus → Jenkins POST, {lat['n']} messages one at a time: p50", f"{lat['p50']:.2f} ms",
                     f"≤ {GOALS['p50_ms']:.0f} ms", ok(lat["p50"] <= GOALS["p50_ms"])))
        rows.append(("  p99", f"{lat['p99']:.2f} ms", f"≤ {GOALS['p99_ms']:.0f} ms", ok(lat["p99"] <= GOALS["p99_ms"])))
        rows.append(("  max", f"{lat['max']:.2f} ms", "", ""))
    c = r.get("cost")
    if c:
        for kind, label in (("relevant", "new PR, configured project"),
                            ("irrelevant", f"comment, unconfigured project, {c['comments']} comments")):
            rust, py = c[kind]["rust"], c[kind]["py"]
            ratio, cpu_ratio = rust["p50_us"] / py["p50_us"], rust["cpu_us"] / py["cpu_us"]
            rows.append((f"Cost per message ({label}): Core.handle() p50 (mean, p99; CPU)",
                         f"{rust['p50_us']:.1f} µs ({rust['mean_us']:.1f}, {rust['p99_us']:.1f}; {rust['cpu_us']:.1f})",
                         f"≤ {GOALS['call_us']:.0f} µs", ok(rust["p50_us"] <= GOALS["call_us"])))
            rows.append(("  pure Python, same rules, p50 (mean, p99; CPU)",
                         f"{py['p50_us']:.1f} µs ({py['mean_us']:.1f}, {py['p99_us']:.1f}; {py['cpu_us']:.1f})",
                         f"Rust ≤ ½ Python: p50 {ratio:.2f}, CPU {cpu_ratio:.2f}", ok(ratio <= GOALS["vs_python"])))
            rows.append(("  whole core back to back (engine thread incl.)", f"{c[kind]['sustained_us']:.1f} µs/msg", "", ""))
    m = r.get("memory")
    if m:
        plus = (m["idle_kb"] - m["off_kb"]) / 1024
        growth = (m["after_kb"] - m["idle_kb"]) / 1024
        rows.append(("Hub RSS without poormanci (enabled: False)", f"{m['off_kb'] / 1024:.1f} MB", "", ""))
        rows.append(("  with poormanci, idle after start", f"{m['idle_kb'] / 1024:.1f} MB (+{plus:.1f})",
                     f"+≤ {GOALS['plus_mb']:.0f} MB", ok(plus <= GOALS["plus_mb"])))
        rows.append((f"  after {m['n']:,} messages ({m['relevant']:,} relevant)",
                     f"{m['after_kb'] / 1024:.1f} MB ({growth:+.1f}; peak {m['peak_kb'] / 1024:.1f})",
                     f"growth ≤ {GOALS['growth_mb']:.0f} MB", ok(growth <= GOALS["growth_mb"])))
        rows.append(("  control: baseline consumer instead, idle → after the same messages",
                     f"{m['base_idle_kb'] / 1024:.1f} → {m['base_after_kb'] / 1024:.1f} MB "
                     f"({(m['base_after_kb'] - m['base_idle_kb']) / 1024:+.1f})", "", ""))
        rows.append(("  hub throughput, paced (100 messages, then wait for the last one's trigger)",
                     f"{m['n'] / m['seconds']:,.0f} msg/s (baseline {m['n'] / m['base_seconds']:,.0f})", "", ""))
    return rows


def table(rows) -> str:
    head = ("Measure", "Figure", "Goal", "Status")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join((re.sub(r"^  ", "↳ ", row[0]),) + tuple(row[1:])) + " |" for row in rows]
    return "\n".join(lines)


def plain(rows) -> str:
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def details(r: dict) -> str:
    out = []
    for b in (r.get("burst"), r.get("burst64")):
        if not b:
            continue
        waves = ((b["n"] + b["concurrency"] - 1) // b["concurrency"] - 1) * 0.5
        each = ", ".join(f"{t:.2f} s" for t in b["last_to_all_each"])
        maxes = ", ".join(f"{t * 1e3:.0f} µs" for t in b["consume_max_each"])
        out.append(f"- Burst, concurrency {b['concurrency']}: last message → last trigger per run {each} (floor from "
                   f"the bound: ceil({b['n']}/{b['concurrency']}) − 1 waves of 0.5 s = {waves:.1f} s); "
                   f"{b['n']} messages published in {b['publish_ms']:.1f} ms; first trigger "
                   f"{b['first_trigger_s'] * 1e3:.0f} ms after the first message; triggers per run {b['triggers']}; "
                   f"longest consume() per run {maxes}, {b['consume_over_1ms']} of {b['consume_calls']} over 1 ms; "
                   f"load {b['load']}.")
    base = r.get("baseline")
    if base:
        out.append(f"- Baseline: first → last trigger {base['first_to_all_s']:.1f} s for {base['n']} messages "
                   f"({base['first_to_all_s'] / base['n'] * 1e3:.0f} ms each); consume() p50 "
                   f"{base['consume_p50_ms']:.0f} ms; load {base['load']}.")
    lat = r.get("latency")
    if lat:
        s = lat["segments"]
        names = {"bus_to_consume": "publish → consume() entered (zmq, reactor, JSON, moksha queue, worker thread)",
                 "consume_to_decided": "consume() entered → engine logged its decision (handle(), channel, engine wake-up, "
                                       "dedupe insert, policy, add_run; the log record needs the GIL)",
                 "decided_to_jenkins": "decision → POST arrived at Jenkins (SQLite commit, dispatch, tokio, "
                                       "connect + send, the stand-in's HTTP parsing)"}
        early = lat.get("early")
        early_text = (f"; the {early['n']} sent in the first 4.5 s, before the first runs' follow-ups (polls, reports, "
                      f"flags: first poll 5 s after a trigger) add work: p50 {early['p50']:.2f} ms, p99 {early['p99']:.2f} ms"
                      if early and early["n"] < lat["n"] else "")
        out.append(f"- Latency: mean {lat['mean']:.2f} ms, {lat['n']} messages in {lat['seconds']:.1f} s{early_text}; "
                   f"load {lat['load']}; split over {lat['segments_n']} messages (p50 / p99 / max, ms):")
        for k, label in names.items():
            if k in s:
                out.append(f"  - {label}: {s[k]['p50']:.2f} / {s[k]['p99']:.2f} / {s[k]['max']:.2f}")
        out.append(f"  - stand-in floor, the same POST sent by plain http.client from the bench process: "
                   f"p50 {lat['floor']['p50']:.2f} ms, p99 {lat['floor']['p99']:.2f} ms")
    c = r.get("cost")
    if c:
        checks = ", ".join(f"{k} {v:.2f}" for k, v in c["log_checks_per_irrelevant"].items())
        slow = ", ".join(f"{kind} Rust {c[kind]['rust']['over_100us']}, Python {c[kind]['py']['over_100us']}"
                         for kind in ("relevant", "irrelevant"))
        out.append(f"- Cost: {c['n']:,} calls of each kind, timing overhead {c['overhead_ns']} ns per call subtracted; "
                   f"calls over 100 µs: {slow}; load {c['load']}. Log-level checks (logging's isEnabledFor, "
                   f"each one a GIL acquisition by the calling thread) per irrelevant message: {checks}.")
    m = r.get("memory")
    if m:
        curve = ", ".join(f"{s:,}: {kb / 1024:.1f}" for s, kb in m["curve"])
        base = ", ".join(f"{s:,}: {kb / 1024:.1f}" for s, kb in m["base_curve"])
        out.append(f"- Memory: all {m['n']:,} messages read, {m['seen']:,} msg_ids recorded by the engine "
                   f"(the relevant ones and the probe); "
                   f"RSS (MB) along the way with poormanci: {curve}; with the baseline: {base}; load {m['load']}.")
    return "\n".join(out)


METHOD = """\
## Method

All bus runs go through the real `fedmsg-hub` (fedmsg 1.1.7, moksha.hub
1.5.17), started as the tests start it (tests/harness.py `Hub`), fed by a
zmq PUB socket in the benchmark process. Jenkins and Pagure are the tests'
stand-ins (tests/standins: werkzeug, HTTP/1.0, one connection per request),
each in a child process of its own, so that neither shares a GIL with the
other or with the benchmark; Jenkins reports each trigger's arrival time
(taken when the request reaches its WSGI app, before any `slow` pause) over
a pipe. The hub logs at production levels (poormanci at INFO) with
microsecond timestamps; a followed job is looked at every 5 s.

1. **Burst.** Stand-in Jenkins answers each trigger 0.5 s after it arrives
   (`slow=0.5`). N `pull-request.new` messages for N distinct open PRs are
   published back to back; the figure is the time from the last publish to
   the arrival of the last of the N triggers (full run: the median of 3
   runs, each with a fresh hub and state). `consume()` is timed inside the
   hub by `bench/probe/sitecustomize.py`, on the hub's PYTHONPATH for these
   runs only: it wraps `Integrator.consume` (the product is not changed)
   and records `perf_counter_ns` around every call. The baseline is
   `bench/baseline.py`, a plain FedmsgConsumer that POSTs to
   `buildWithParameters` inside `consume()` (requests), run by the same hub
   with `fedmsg-hub --with-consumers baseline:Baseline` and timed by the
   same probe. The speed-up compares first message → last trigger.
2. **Latency.** Stand-in Jenkins answers at once. One `pull-request.new` at a
   time (distinct PRs), the next published when the previous trigger has
   arrived; latency = arrival at Jenkins − publish time (one clock, one
   machine). The first 20 (quick: 10) are a warm-up, not counted. The split
   uses the probe's consume() entry time and the core's own INFO line
   `msg <id> ...: trigger ...`, logged by the engine thread when it decides.
   The floor is the same POST sent by `http.client` from the benchmark.
3. **Cost per message.** In-process, no hub: a real `Core(config)` with a
   state_dir in a temp folder, the `poormanci` logger at INFO to a file.
   Each `core.handle(topic, envelope)` call is timed with `perf_counter_ns`
   (the cost as the hub's worker thread sees it; the timing's own 70–80 ns
   subtracted), and the thread's CPU time is summed over each batch. Calls
   go in batches of 2000 (quick: 1000) with `wait_idle(0)` between batches
   as a barrier, so the engine's 10 000-message inbox never fills during a
   timed batch. Relevant: `pull-request.new` for a configured project,
   distinct PRs (each one is triggered for real). Irrelevant:
   `comment.added` on an unconfigured project, 200 comments. Pure Python:
   `bench/pure_python.py`, the same reading and decisions (topic, project,
   status, source, last comment, update notice, commands, branch check,
   msg_id and built-commit dicts) in the core's order, timed the same way
   before the core exists. "Back to back" sends 10 000 fresh messages with
   no pause and waits until the engine has read them all: the whole core's
   cost, engine thread included. The goal is judged on the medians; means
   and p99 show the tails.
4. **Memory.** VmRSS of the hub process from /proc: a hub with
   `poormanci.enabled: False` (the module is imported, the consumer not
   started), then a hub with it, after start (a probe PR has been
   triggered) and after N messages: in chunks of 100, 99 `comment.added` on
   an unconfigured project (20 comments each) then one `pull-request.new`
   on a configured project, the next chunk sent once that one's trigger
   arrived (so moksha's queue stays short and its buffering is not
   counted; messages are handled in order, so every one was read). The
   relevant ones are checked to have reached the engine (their msg_ids are
   in the state store's `seen` table); RSS is read after the
   runs' follow-ups (polls, reports, flags) are done. Control: the same
   messages through a hub running the baseline consumer instead.
"""


def markdown(r: dict, rows, quick: bool, info: dict, notes: str) -> str:
    size = "`--quick` (small sizes, not the figures)" if quick else "full"
    return f"""# poormanci benchmarks

Issue 7: a slow Jenkins or Pagure never delays the bus, a burst is handled
at once, the consumer is cheap to host. Produced by `.venv/bin/python
bench/run.py` ({size} run); re-run it to refresh this file.

## Machine

- {info['nproc']} CPUs: {info['cpu']}; memory {info['memory']}; Linux {info['kernel']}
- Python {info['python']}; {info['rustc']}; poormanci {info['source']}
- {info['date']}; load average (1/5/15 min) at start {r['load_start']}, at end {r['load_end']}

## Figures

{table(rows)}

{details(r)}

{notes}
{METHOD}"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI): under 2 minutes")
    ap.add_argument("--output", type=Path, help="where to write the report (default: BENCHMARKS.md; "
                                                "--quick: a file in the temp dir)")
    ap.add_argument("--only", help="comma-separated subset: burst,burst64,baseline,latency,cost,memory")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (hub logs, state, raw figures)")
    ap.add_argument("--report-from", type=Path, metavar="RESULTS_JSON",
                    help="run nothing: rewrite the report from a kept run's results.json (e.g. after editing bench/NOTES.md)")
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    size = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else {"burst", "burst64", "baseline", "latency", "cost", "memory"}
    output = args.output or (Path(tempfile.gettempdir()) / "poormanci-bench-quick.md" if args.quick
                             else ROOT / "BENCHMARKS.md")
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        r, info = saved["results"], saved["machine"]
        rows = build_rows(r)
        print(plain(rows))
        notes_file = BENCH / "NOTES.md"
        notes = notes_file.read_text() if notes_file.exists() and not saved["quick"] else ""
        output.write_text(keep_follow_section(output, markdown(r, rows, saved["quick"], info, notes)))
        log(f"written {output}")
        return 0
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="poormanci-bench-"))
    started = time.time()
    log(f"poormanci bench ({'quick' if args.quick else 'full'}), work dir {work}, load {loadavg()}")
    r: dict = {"load_start": loadavg()}
    if "burst" in only:
        r["burst"] = burst(work, size.burst, kind="poormanci", repeats=size.repeats)
    if "burst64" in only:
        r["burst64"] = burst(work, size.burst, kind="poormanci", concurrency=64, repeats=size.repeats)
    if "baseline" in only:
        r["baseline"] = burst(work, size.burst, kind="baseline")
    if "latency" in only:
        r["latency"] = latency(work, size.latency, size.warmup)
    if "cost" in only:
        r["cost"] = cost(work, size.cost, size.cost_batch)
    if "memory" in only:
        r["memory"] = memory(work, size.memory)
    r["load_end"] = loadavg()
    rows = build_rows(r)
    print(plain(rows))
    print(details(r))
    notes_file = BENCH / "NOTES.md"
    notes = notes_file.read_text() if notes_file.exists() and not args.quick else ""
    output.write_text(keep_follow_section(output, markdown(r, rows, args.quick, info, notes)))
    if args.keep:
        (work / "results.json").write_text(json.dumps({"results": r, "machine": info, "quick": args.quick}, indent=1))
        log(f"kept {work} (hub logs, state stores, results.json)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"written {output} in {time.time() - started:.0f} s")
    missed = [row[0] for row in rows if row[3] == "MISSED"]
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
