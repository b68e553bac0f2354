"""Several instances on one PostgreSQL store beside one on SQLite (issue 16):
a burst of new PRs through real fedmsg-hubs that all hear every message.

    .venv/bin/python bench/instances.py            # 200 PRs, 1/2/3 instances
    .venv/bin/python bench/instances.py --quick    # 40 PRs (CI)

For each setup: the time from the first message to the last trigger at
Jenkins, and to the last report (every PR flagged success, the store
settled); and the hubs' CPU time (user + system, all instances together)
per message handled. The messages are the PRs' ``pull-request.new`` and
Jenkins' build messages; with N hubs each hears all of them, and the
instances' shared database decides which one acts. Prints a table; exits
non-zero when a PR is not built exactly once or not reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import messages  # noqa: E402
import postgres  # noqa: E402
from harness import Hub, make_config, store_status, wait_until  # noqa: E402
from standins import FakeJenkins, FakePagure  # noqa: E402
from test_reliability import pr_url, triggers_for  # noqa: E402

JOBS = {"pungi-pr": "BEEFCAFE"}
SETUPS = [("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def settled(config: dict) -> bool:
    try:
        status = store_status(config)
    except RuntimeError:
        return False
    return not status["tasks"] and not status["open_runs"]


def run_setup(backend: str, instances: int, n: int, work: Path) -> dict:
    with FakeJenkins(JOBS, build_time=0.5) as jenkins, FakePagure() as pagure:
        prs = [pagure.add_pr("pungi", i, author="alice") for i in range(1, n + 1)]
        store = None
        if backend == "postgresql":
            store = postgres.shared().store_config(postgres.database_for(work / "shared"))
        configs = []
        for i in range(instances):
            config = make_config(jenkins, pagure, state_dir=work / f"state{i}", jenkins={"poll_interval": 2.0})
            if store:
                config["poormanci.store"] = store
            configs.append(config)
        hubs: list[Hub] = []
        try:
            for i, config in enumerate(configs):
                hubs.append(Hub(config, work / f"hub{i}", bus=hubs[0] if hubs else None).start(ready=False))
            for hub in hubs:
                hub.wait_ready(60)
            wait_until(lambda: settled(configs[0]), 30, "the probes' work to settle", interval=0.2)
            cpu0 = sum(cpu_seconds(h.proc.pid) for h in hubs)
            t0 = time.time()
            for pr in prs:
                hubs[0].publish(messages.pr_new(pr))
            urls = [pr_url(pagure, pr["id"]) for pr in prs]
            wait_until(lambda: all(triggers_for(jenkins, u) for u in urls), 60 + n / 2, f"{n} triggers", interval=0.05)
            t_triggered = time.time()
            # Jenkins' bus message for each build, as its notification plugin sends it.
            sent = set()
            def reported() -> bool:
                for b in jenkins.builds("pungi-pr"):
                    if not b["building"] and b["number"] not in sent:
                        sent.add(b["number"])
                        hubs[0].publish(jenkins.bus_message_for("pungi-pr", b["number"]))
                return all(any(f["status"] == "success" for f in pagure.flags("pungi", pr["id"])) for pr in prs)
            wait_until(reported, 120 + n, "every PR reported", interval=0.1)
            t_reported = time.time()
            wait_until(lambda: settled(configs[0]), 60, "the store to settle", interval=0.2)
            cpu = sum(cpu_seconds(h.proc.pid) for h in hubs) - cpu0
            doubled = [u for u in urls if len(triggers_for(jenkins, u)) > 1]
        finally:
            for hub in reversed(hubs):
                hub.close()
        messages_heard = 2 * n * instances  # each hub hears every PR's message and its build's
        return {"backend": backend, "instances": instances, "n": n, "to_triggered_s": t_triggered - t0,
                "to_reported_s": t_reported - t0, "cpu_s": cpu, "cpu_ms_per_message": cpu * 1e3 / messages_heard,
                "cpu_ms_per_pr": cpu * 1e3 / n, "doubled": doubled}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 PRs instead of 200")
    args = ap.parse_args()
    if why := postgres.missing():
        print(f"no PostgreSQL here: {why}")
        return 1
    n = 40 if args.quick else 200
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="poormanci-bench-instances-") as tmp:
        for backend, instances in SETUPS:
            print(f"{backend} x{instances}: {n} PRs ...", flush=True)
            r = run_setup(backend, instances, n, Path(tmp) / f"{backend}-{instances}")
            failed |= bool(r["doubled"])
            rows.append(r)
    print()
    print(f"{'store':<12} {'instances':>9} {'PRs':>5} {'all triggered':>14} {'all reported':>13} {'CPU/message':>12} {'CPU/PR':>8} {'doubled':>8}")
    for r in rows:
        print(f"{r['backend']:<12} {r['instances']:>9} {r['n']:>5} {r['to_triggered_s']:>12.2f} s {r['to_reported_s']:>11.2f} s "
              f"{r['cpu_ms_per_message']:>9.2f} ms {r['cpu_ms_per_pr']:>5.1f} ms {len(r['doubled']):>8}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
