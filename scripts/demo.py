"""poormanci end to end on one machine: a PR opens, Jenkins builds it, Pagure gets the result.

Runs the stand-in Jenkins and Pagure from tests/standins and the real
fedmsg-hub with poormanci (config shaped as in the tests), publishes Pagure's
pull-request.new message, then prints what happened, with the time since
that message. `make demo` runs it; it exits non-zero with the reason and the
hub's log if a step does not happen in time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import messages  # noqa: E402
from harness import Hub, make_config, wait_until  # noqa: E402
from standins import FakeJenkins, FakePagure  # noqa: E402

JOB, PROJECT, PR_ID = "pungi-pr", "pungi", 235
FINAL = ("success", "failure", "error", "canceled")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="poormanci-demo-"))
    events: list[tuple[float, str, str]] = []  # (time.time(), source, text)
    with FakeJenkins({JOB: "BEEFCAFE", "folder/python-foo": "F00"}, build_time=2.0) as jenkins, \
            FakePagure() as pagure:
        pr = pagure.add_pr(PROJECT, PR_ID, author="alice", fork_user="alice",
                           branch_from="fix-thing", branch="master", commit="3f2a9c1e" + "5d" * 16)
        hub = Hub(make_config(jenkins, pagure, state_dir=workdir / "state"), workdir / "hub")
        step = "starting the hub"
        try:
            print(f"starting fedmsg-hub with poormanci (log: {hub.log_path}) ...", flush=True)
            hub.start()

            step = "publish pull-request.new"
            env = messages.pr_new(pr)
            t0 = time.time()
            hub.publish(env)
            events.append((t0, "bus", f"{env['topic']}  {PROJECT}#{PR_ID} by alice "
                                      f"(fork alice/{PROJECT}, branch fix-thing)"))

            step = "poormanci triggers Jenkins"
            wait_until(lambda: jenkins.triggers, 15, step)
            step = "poormanci sets a pending flag"
            wait_until(lambda: flags(pagure, "pending"), 15, step)
            step = "the build finishes"
            # Jenkins shows the result while still building; the build has ended once building is false.
            build = wait_until(lambda: (b := jenkins.build(JOB, 1)) and not b["building"] and b, 15, step)

            step = "publish Jenkins' build message"
            done = jenkins.bus_message_for(JOB, 1)
            hub.publish(done)
            events.append((time.time(), "bus", f"{done['topic']}  {JOB} #{build['number']}"))

            step = "poormanci sets the final flag"
            wait_until(lambda: flags(pagure, *FINAL), 15, step)
            step = "poormanci comments on the PR"
            wait_until(lambda: pagure.comments(PROJECT, PR_ID), 15, step)
        except AssertionError as exc:
            print_timeline(events, jenkins, pagure)
            print(f"\nFAILED at step '{step}': {exc}\n\n{hub.log_tail(8000)}", file=sys.stderr)
            print(f"(kept {workdir} for a look)", file=sys.stderr)
            return 1
        finally:
            hub.close()
        print_timeline(events, jenkins, pagure)
        final = flags(pagure, *FINAL)[-1]["data"]["status"]
    shutil.rmtree(workdir, ignore_errors=True)
    if final != "success":
        print(f"\nFAILED: the build passed but the final flag says {final!r}", file=sys.stderr)
        return 1
    print("\ndemo OK")
    return 0


def flags(pagure, *statuses) -> list[dict]:
    """Flag POSTs Pagure accepted, with one of these statuses."""
    return [h for h in pagure.flag_history if h["code"] == 200 and h["data"].get("status") in statuses]


def print_timeline(events, jenkins, pagure):
    events = list(events)
    for t in jenkins.triggers:
        params = " ".join(f"{k}={v}" for k, v in t.params.items())
        events.append((t.time, "jenkins", f"POST /job/{t.job}/buildWithParameters  {params} "
                                          f"cause={t.cause!r} -> {t.status}"))
    for b in jenkins.builds():
        # Jenkins gives whole milliseconds: +2 ms keeps a build after what caused it.
        start = b["timestamp"] / 1000 + 0.002
        events.append((start, "jenkins", f"build {b['fullDisplayName']} started"))
        if b["result"]:
            end = start + b["duration"] / 1000
            events.append((end, "jenkins", f"build {b['fullDisplayName']} {b['result']}"))
    for h in pagure.flag_history:
        d = h["data"]
        outcome = h["message"] or f"rejected {h['code']}"
        events.append((h["time"], "pagure", f"flag {d.get('status')}  \"{d.get('comment')}\"  "
                                            f"uid={d.get('uid')} ({outcome})"))
    for c in pagure.comments(PROJECT, PR_ID):
        text = c["comment"].replace("\n", " ")
        events.append((float(c["date_created"]), "pagure", f"comment by {c['user']['name']}  {text}"))
    if not events:
        return
    t0 = min(t for t, _, _ in events)
    print()
    for t, source, text in sorted(events, key=lambda e: e[0]):
        print(f"{f'+{t - t0:.2f}s':<8} {source:<8} {text}")
    polls = sum(r.method == "GET" for r in jenkins.requests)
    print(f"\n(Jenkins answered {len(jenkins.requests)} requests, {polls} of them GETs; "
          f"Pagure {len(pagure.requests)})")


if __name__ == "__main__":
    sys.exit(main())
