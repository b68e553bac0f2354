"""Reliability through the real fedmsg-hub (issue 4): faults injected in the
peers, outages, SIGKILL and SIGTERM with work in flight, hostile bus input,
and a flood.

Every test ends with the same accounting, per PR: how many builds Jenkins ran
for it (found by the cause poormanci gives, merged triggers included), how
many final flags and poormanci comments Pagure holds, and only once the state
store is settled (no task left, no run open): "nothing lost" is then every PR
built and reported, "nothing doubled" no PR with two of anything.

Figures for the closing note are printed as ``FIGURES ...`` lines (``pytest -s``).
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import threading
import time
from pathlib import Path

import zmq

import harness
import messages
from harness import decided

JOB = "pungi-pr"


# -- accounting ---------------------------------------------------------------------

def pr_url(pagure, pr_id: int, project: str = "pungi") -> str:
    return f"{pagure.url}/{project}/pull-request/{pr_id}"


def is_ours(note: str | None, url: str) -> bool:
    """poormanci's cause for a run of this PR: "<pr url> [poormanci run N]"."""
    return bool(note) and note.startswith(f"{url} [poormanci run ")


def notes(build: dict) -> list[str]:
    return [c.get("note") for a in build["actions"] for c in a.get("causes", [])]


def builds_for(jenkins, url: str, job: str = JOB) -> list[dict]:
    return [b for b in jenkins.builds(job) if any(is_ours(n, url) for n in notes(b))]


def triggers_for(jenkins, url: str) -> list:
    return [t for t in jenkins.triggers if is_ours(t.cause, url)]


def final_flags(pagure, pr_id: int) -> list[dict]:
    return [f for f in pagure.flags("pungi", pr_id) if f["status"] != "pending"]


def bot_comments(pagure, pr_id: int) -> list[dict]:
    return [c for c in pagure.comments("pungi", pr_id) if c["user"]["name"] == pagure.user]


def reported(pagure, pr_ids) -> bool:
    return all(final_flags(pagure, i) and bot_comments(pagure, i) for i in pr_ids)


def store(config) -> dict:
    return harness.store_status(config)


def settled(config, runs: bool = True) -> bool:
    """The state store holds no task (and no open run): poormanci has nothing left to do."""
    s = store(config)
    return not s["tasks"] and not (runs and s["open_runs"])


def wait_done(hub, jenkins, pagure, config, pr_ids, timeout: float, what: str):
    """Until every PR has its comment (the last thing a report does) and the
    store has no task left: then what Pagure and Jenkins hold is final."""
    harness.wait_until(lambda: not hub.alive() or (all(bot_comments(pagure, i) for i in pr_ids) and settled(config)),
                       timeout, f"every PR built and reported ({what})", interval=0.1)
    assert hub.alive(), f"the hub died\n{hub.log_tail()}"


def account(jenkins, pagure, pr_ids, *, comments=lambda pr_id: (1, 1)) -> dict:
    """Assert, per PR: one queue item and one build, of one run; exactly one
    flag, success; ``comments(pr_id)`` = (min, max) poormanci comments.
    Return the figures."""
    lost, doubled, merged, extra_comments, seen = [], [], 0, 0, {}
    for i in pr_ids:
        url = pr_url(pagure, i)
        triggers, builds = triggers_for(jenkins, url), builds_for(jenkins, url)
        flags = [f["status"] for f in pagure.flags("pungi", i)]
        said = len(bot_comments(pagure, i))
        seen[i] = {"runs": sorted({t.cause.rsplit(" ", 1)[-1] for t in triggers}),
                   "queue_items": len({t.queue_id for t in triggers}), "builds": len(builds),
                   "flags": flags, "comments": said}
        merged += sum(t.merged for t in triggers)
        extra_comments += max(0, said - 1)
        low, high = comments(i)
        if not builds or "success" not in flags or not said:
            lost.append(i)
        elif (len(seen[i]["runs"]) > 1 or seen[i]["queue_items"] > 1 or len(builds) > 1
              or flags != ["success"] or not low <= said <= high):
            doubled.append(i)
    assert not lost, f"lost: { {i: seen[i] for i in lost} }"
    assert not doubled, f"doubled or wrong: { {i: seen[i] for i in doubled} }"
    return {"prs": len(pr_ids), "lost": 0, "duplicated": 0, "merged_triggers": merged,
            "comments_resent": extra_comments}


def figures(name: str, **values):
    print(f"FIGURES {name}: " + json.dumps(values, sort_keys=True))


def clean_log(hub):
    text = hub.log_text()
    for bad in ("Traceback", "PanicException", "panicked at", "internal error"):
        assert bad not in text, f"{bad!r} in the hub log\n{hub.log_tail()}"


def add_prs(pagure, n: int, start: int = 1) -> list[dict]:
    """PRs whose triggers differ (own branch): Jenkins never merges two PRs' items."""
    return [pagure.add_pr("pungi", i, author="alice", branch_from=f"topic-{i}") for i in range(start, start + n)]


def count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text, re.M))


# -- fault knobs the stand-ins do not have ------------------------------------------

class Chaos:
    """Fail ``rate`` of a stand-in's requests, half "500" (answered at once, not
    done) and half "timeout" (held ``hang`` s, longer than the client timeout,
    not done). A request is failed at most ``max_streak`` times in a row per
    endpoint and trigger cause: the backoff doubles from ~1 s, and a task
    failed 4 times in a row costs ~15 s, so the cap keeps a 10-PR run in
    seconds and every task well inside its retry deadline. Failed requests
    are marked ``rec.failed``."""

    def __init__(self, standin, rate: float, *, seed: int, hang: float = 2.0, max_streak: int = 2):
        self.standin, self.rate, self.hang, self.max_streak = standin, rate, hang, max_streak
        self.rng = random.Random(seed)
        self.streak: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.inner = standin.dispatch
        standin.dispatch = self

    def __call__(self, request, rec):
        key = (request.method, request.path, request.form.get("cause"))
        with self.lock:
            fail = self.rng.random() < self.rate and self.streak[key] < self.max_streak
            self.streak[key] = self.streak[key] + 1 if fail else 0
            mode = self.rng.choice(["500", "timeout"]) if fail else None
        if mode is None:
            return self.inner(request, rec)
        rec.failed = mode
        if mode == "timeout":
            self.standin._pause(self.hang)
        return self.standin.error_response(500)

    def failed(self) -> collections.Counter:
        return collections.Counter(r.failed for r in self.standin.requests if r.failed)


class SlowPosts:
    """Pagure takes ``seconds`` before doing a POST (flag, comment); a client
    that goes away meanwhile does not stop it, as with a real server."""

    def __init__(self, pagure, seconds: float):
        self.pagure, self.seconds, self.inner = pagure, seconds, pagure.dispatch
        pagure.dispatch = self

    def __call__(self, request, rec):
        if request.method == "POST":
            self.pagure._pause(self.seconds)
        return self.inner(request, rec)


def all_answered(*standins) -> bool:
    return all(r.status is not None for s in standins for r in list(s.requests))


# -- 1. faults: 30 % of requests fail --------------------------------------------------

def test_thirty_percent_of_requests_fail(jenkins, pagure, make_config, hub_factory):
    """Both peers fail 30 % of requests (500 or a timeout); 10 PRs: each is built
    once and reported once (one success flag, one comment)."""
    config = make_config(jenkins, pagure, retry_deadline=30, jenkins={"timeout": 1}, pagure={"timeout": 1})
    prs = add_prs(pagure, 10)
    hub = hub_factory(config)
    chaos = [Chaos(jenkins, 0.3, seed=4), Chaos(pagure, 0.3, seed=5)]
    started = time.monotonic()
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    ids = [pr["id"] for pr in prs]
    wait_done(hub, jenkins, pagure, config, ids, 35, "30 % of requests failing")
    took = time.monotonic() - started
    result = account(jenkins, pagure, ids)
    # A success flag is posted once: 500 and timeout never do the work.
    for i in ids:
        assert len([h for h in pagure.flag_history if h["id"] == i and h["code"] == 200
                    and h["data"]["status"] == "success"]) == 1, pagure.flag_history
    failed_j, failed_p = chaos[0].failed(), chaos[1].failed()
    assert sum(failed_j.values()) >= 5 and sum(failed_p.values()) >= 5, (failed_j, failed_p)
    clean_log(hub)
    figures("fault-injection", **result, seconds=round(took, 1),
            jenkins_requests=len(jenkins.requests), pagure_requests=len(pagure.requests),
            jenkins_failed=dict(failed_j), pagure_failed=dict(failed_p),
            failed_and_recovered=sum(failed_j.values()) + sum(failed_p.values()))


def test_a_retried_pending_flag_never_lands_after_the_result(jenkins, pagure, make_config, hub_factory):
    """The pending flag times out while the build ends and the result is
    queued: its retry must not overwrite the final flag (same uid) with
    "pending"."""
    config = make_config(jenkins, pagure, retry_deadline=30, pagure={"timeout": 1})
    pagure.hang = 2.0
    (pr,) = add_prs(pagure, 1)
    hub = hub_factory(config)
    hub.wait_for_log(r"Pagure token of cibot")  # the start-up check is done
    pagure.fail_next(1, "timeout")  # the next Pagure request: the "Build queued" flag
    hub.publish(messages.pr_new(pr))
    wait_done(hub, jenkins, pagure, config, [1], 20, "one PR, a pending flag timing out")
    history = [(h["data"]["status"], h["data"]["comment"]) for h in pagure.flag_history]
    assert [f["status"] for f in pagure.flags("pungi", 1)] == ["success"], history
    assert history[-1][0] == "success", history


# -- 2. outages ------------------------------------------------------------------------

OUTAGE = 3.0


def test_jenkins_outage(jenkins, pagure, make_config, hub_factory):
    """Jenkins refuses connections while 5 PR messages arrive, for ~3 s: then
    each PR is built once and reported once."""
    config = make_config(jenkins, pagure, retry_deadline=30)
    prs = add_prs(pagure, 5)
    hub = hub_factory(config)
    mark = hub.log_mark()
    jenkins.down()
    down_at = time.monotonic()
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    harness.wait_until(lambda: count(r"trigger of run \d+ .* failed: .*; retrying", hub.log_text(mark)) == 5,
                       10, "5 failed triggers")
    time.sleep(max(0.0, down_at + OUTAGE - time.monotonic()))  # the outage itself, not a wait
    jenkins.up()
    ids = [pr["id"] for pr in prs]
    wait_done(hub, jenkins, pagure, config, ids, 25, "Jenkins back")
    result = account(jenkins, pagure, ids)
    log = hub.log_text(mark)
    refused = count(r"^.*(failed|failed again|polling again).*(refused|error sending request).*$", log)
    assert refused >= 5
    clean_log(hub)
    figures("jenkins-outage", **result, outage_s=OUTAGE, requests_failed_and_recovered=refused)


def test_pagure_outage_during_the_reports(jenkins, pagure, make_config, hub_factory):
    """Pagure refuses connections when 5 builds end, for ~3 s: then each PR
    gets its one final flag and one comment."""
    config = make_config(jenkins, pagure, retry_deadline=30)
    jenkins.build_time = 2.0
    prs = add_prs(pagure, 5)
    ids = [pr["id"] for pr in prs]
    hub = hub_factory(config)
    mark = hub.log_mark()
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    harness.wait_until(lambda: count(r"build #\d+ started", hub.log_text(mark)) == 5, 15, "5 builds started")
    harness.wait_until(lambda: all(pagure.flags("pungi", i) for i in ids), 10, "5 pending flags")
    pagure.down()
    down_at = time.monotonic()
    assert not any(final_flags(pagure, i) for i in ids), "the builds ended before the outage"
    # Every report (the PR head look-up comes first) hits the outage.
    harness.wait_until(lambda: count(r"report of run \d+ .* failed: .*; retrying", hub.log_text(mark)) == 5,
                       15, "5 failed reports")
    time.sleep(max(0.0, down_at + OUTAGE - time.monotonic()))  # the outage itself, not a wait
    pagure.up()
    wait_done(hub, jenkins, pagure, config, ids, 25, "Pagure back")
    result = account(jenkins, pagure, ids)
    refused = count(r"^.*(failed|failed again).*(refused|error sending request).*$", hub.log_text(mark))
    clean_log(hub)
    figures("pagure-outage", **result, outage_s=OUTAGE, requests_failed_and_recovered=refused)


# -- 3. SIGKILL and resume ---------------------------------------------------------------

# The core's line for a decision to build: "msg <id> <topic>: trigger <job> for pungi#<n> ... (run <r>)".
DECISION = rf"^.* msg \S+ \S+: trigger {JOB} for pungi#(\d+)\b.*\(run \d+\)$"


def queued_prs(text: str) -> set[int]:
    return {int(m) for m in re.findall(rf"trigger of run \d+ \({JOB} for pungi#(\d+)\): queued as", text)}


def test_sigkill_in_a_burst_of_triggers(jenkins, pagure, make_config, hub_factory):
    """20 PRs; Jenkins answers triggers slowly (0.5 s, 2 at a time); the hub is
    SIGKILLed once every PR is decided but not every trigger answered, and
    started again on the same state_dir.

    Triggers in flight at the kill reach Jenkins but their answer is lost: the
    resumed trigger is the same run (same cause, same parameters), which
    Jenkins merges into the item still waiting (queue_delay). Every PR ends
    with one queue item, one build and one report."""
    config = make_config(jenkins, pagure, retry_deadline=60, jenkins={"concurrency": 2})
    jenkins.slow, jenkins.queue_delay = 0.5, 10.0
    prs = add_prs(pagure, 20)
    ids = [pr["id"] for pr in prs]
    hub = hub_factory(config)
    mark = hub.log_mark()
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    harness.wait_until(lambda: count(DECISION, hub.log_text(mark)) == 20, 10,
                       "20 decisions")
    harness.wait_until(lambda: len(queued_prs(hub.log_text(mark))) >= 4, 10, "4 triggers answered")
    hub.kill()
    answered = queued_prs(hub.log_text(mark))
    assert len(answered) < 20, "every trigger was answered before the kill"
    pending = {t["pr"] for t in store(config)["tasks"] if t["kind"] == "trigger"}
    # Nothing lost: every trigger not answered is still in the store (an answer
    # logged just before the kill may not have been committed: it is sent again).
    assert pending >= set(ids) - answered, (pending, answered)
    harness.wait_until(lambda: all_answered(jenkins), 5, "Jenkins to finish the requests of the dead hub")
    landed_unanswered = {i for i in pending if triggers_for(jenkins, pr_url(pagure, i))}
    hub.start()
    wait_done(hub, jenkins, pagure, config, ids, 35, "after the restart")
    result = account(jenkins, pagure, ids)
    # The window was hit: a trigger that reached Jenkins unanswered was sent again and merged.
    assert landed_unanswered and result["merged_triggers"] >= len(landed_unanswered), (landed_unanswered, result)
    clean_log(hub)
    figures("sigkill-triggers", **result, answered_before_kill=len(answered),
            resumed_triggers=len(pending), reached_jenkins_unanswered=len(landed_unanswered))


def test_sigkill_while_reporting(jenkins, pagure, make_config, hub_factory):
    """10 PRs; Pagure is slow (0.5 s a POST); the hub is SIGKILLed once some
    comments are in, and started again.

    Flags are idempotent (one uid per PR and job, updated in place): each PR
    ends with exactly one flag, success. Comments are not: a comment POST may
    reach Pagure with its answer lost to the kill, and its task is still in
    the store. Such a comment was marked as tried before it was sent, so after
    the restart poormanci first looks for it on the PR: exactly one comment
    per PR. (Left open: a Pagure so slow that it stores the first POST only
    after that look.)"""
    config = make_config(jenkins, pagure, retry_deadline=60, pagure={"concurrency": 4})
    SlowPosts(pagure, 0.5)
    prs = add_prs(pagure, 10)
    ids = [pr["id"] for pr in prs]
    hub = hub_factory(config)
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    harness.wait_until(lambda: sum(bool(bot_comments(pagure, i)) for i in ids) >= 2, 30, "2 comments in")
    hub.kill()
    assert not reported(pagure, ids), "every report was done before the kill"
    harness.wait_until(lambda: all_answered(pagure), 5, "Pagure to finish the requests of the dead hub")
    resend = {t["pr"] for t in store(config)["tasks"] if t["kind"] == "comment"}
    window = {i for i in resend if bot_comments(pagure, i)}
    hub.start()
    wait_done(hub, jenkins, pagure, config, ids, 30, "after the restart")
    result = account(jenkins, pagure, ids, comments=lambda i: (1, 1))
    clean_log(hub)
    figures("sigkill-reports", **result, comment_tasks_resumed=len(resend), comment_window=len(window))


# -- 4. SIGTERM --------------------------------------------------------------------------

def test_sigterm_lets_requests_in_flight_finish(jenkins, pagure, make_config, hub_factory):
    """SIGTERM (systemd's stop) twice: while triggers are in flight (Jenkins
    slow) and while comments are in flight (Pagure slow). The hub stops
    cleanly within its 5 s close deadline, having finished what was in
    flight; restarted, it does the rest: every PR built once, reported once,
    and (unlike SIGKILL) no comment twice."""
    config = make_config(jenkins, pagure, retry_deadline=60, jenkins={"concurrency": 2},
                         pagure={"concurrency": 2})
    jenkins.slow, jenkins.queue_delay = 1.0, 3.0
    prs = add_prs(pagure, 6)
    ids = [pr["id"] for pr in prs]
    hub = hub_factory(config)
    mark = hub.log_mark()
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    harness.wait_until(lambda: count(DECISION, hub.log_text(mark)) == 6, 10, "6 decisions")
    def held():
        return [r for r in list(jenkins.requests) if r.status is None and r.path.endswith("/buildWithParameters")]

    harness.wait_until(lambda: len(held()) == 2, 5, "2 triggers held by Jenkins")
    in_flight = {int(r.form["BRANCH"].split("-")[1]) for r in held()}
    stopped_at = time.monotonic()
    rc = hub.stop()
    took = time.monotonic() - stopped_at
    assert rc not in (-15, -9), f"SIGTERM killed the hub (exit {rc}) without a clean stop\n{hub.log_tail()}"
    assert took < 8, took
    assert in_flight <= queued_prs(hub.log_text(mark)), "a trigger in flight was not waited for"
    hub.start()
    # Pagure is slowed only once the start-up token check is over: that check's
    # probes are not work the hub owes, and a stop may cut them off.
    hub.wait_for_log(r"Pagure token of cibot")
    SlowPosts(pagure, 1.0)
    harness.wait_until(lambda: any(r.path.endswith("/comment") and r.status is None for r in list(pagure.requests)),
                       25, "a comment in flight")
    rc = hub.stop()
    assert rc not in (-15, -9), f"SIGTERM killed the hub (exit {rc}) without a clean stop\n{hub.log_tail()}"
    assert all_answered(pagure), ("the hub left before its comments were answered: "
                                  f"{[r.path for r in list(pagure.requests) if r.status is None]}")
    hub.start()
    wait_done(hub, jenkins, pagure, config, ids, 30, "after two SIGTERMs")
    result = account(jenkins, pagure, ids)  # exactly one comment each
    clean_log(hub)
    figures("sigterm", **result, stop_seconds=round(took, 2))


# -- 5. hostile input through the real hub -----------------------------------------------

PR_TOPIC = f"{messages.PAGURE_PREFIX}.pull-request"
BUILD_TOPIC = "org.fedoraproject.prod.jenkins.build.passed"


def publish_raw(hub, topic: str, body: bytes):
    """Bytes on the wire as they are, JSON or not (Hub.publish would encode them)."""
    hub._pub.send_multipart([topic.encode(), body])


def test_hostile_input_through_the_real_hub(jenkins, pagure, make_config, hub_factory):
    """Malformed messages on subscribed topics: each is one log line (WARNING
    malformed/refused, or DEBUG ignored) and nothing else; then the hub is
    alive and builds the next valid PR. No traceback, no panic."""
    pr = pagure.add_pr("pungi", 7, author="alice")
    good = pagure.add_pr("pungi", 8, author="alice", branch_from="good")
    hub = hub_factory(make_config(jenkins, pagure))

    def env(topic, msg):
        return messages.envelope(topic, msg)

    def pr_with(**changes):
        p = json.loads(json.dumps(pr))
        for key, value in changes.items():
            p[key] = value
        return env(f"{PR_TOPIC}.new", {"agent": "alice", "pullrequest": p})

    big_comment = dict(pr, comments=[messages.comment_json(pr, "x" * (5 << 20), "mallory", notification=True)])
    nested = lambda depth: "[" * depth + "]" * depth  # noqa: E731
    deep_pr = '{"project": ' + '{"a": ' * 500 + "1" + "}" * 500 + ', "id": 7, "status": "Open"}'
    # Low then high surrogate: two lone ones (a high-low pair would decode to one
    # code point), which no UTF-8 string can hold.
    garbage = "\udfff\ud800\u202e\x00\ufffe\U0010ffff\u0301" * 50
    odd = "\u202e\x00\ufffe\U0010ffff\u0301\U0001f4a5"  # valid UTF-8, on the wire as well
    # (name, topic, wire body or envelope): a dict is encoded by Hub.publish.
    cases = [
        ("body string", f"{PR_TOPIC}.new.h1", json.dumps("just a string").encode()),
        ("body list", f"{PR_TOPIC}.new.h2", json.dumps([1, "two", None]).encode()),
        ("body null", f"{PR_TOPIC}.new.h3", b"null"),
        ("body number", f"{PR_TOPIC}.new.h4", b"42"),
        ("not JSON", f"{PR_TOPIC}.new.h5", b"this is {not JSON at all"),
        ("10 000 deep", f"{PR_TOPIC}.new.h6",
         ('{"topic": "x", "msg_id": "2026-deep", "msg": ' + nested(10_000) + "}").encode()),
        ("msg string", None, env(f"{PR_TOPIC}.new", "a string")),
        ("msg list", None, env(f"{PR_TOPIC}.new", [pr])),
        ("msg null", None, env(f"{PR_TOPIC}.new", None)),
        ("msg number", None, env(f"{PR_TOPIC}.new", 3.5)),
        ("pullrequest missing", None, env(f"{PR_TOPIC}.new", {"agent": "alice"})),
        ("id a string", None, pr_with(id="7")),
        ("status 42", None, pr_with(status=42)),
        ("branch with a newline", None, pr_with(branch_from="fix\n--upload-pack=evil")),
        ("target branch with a newline", None, pr_with(branch="master\nfoo")),
        ("5 MB branch", None, pr_with(branch_from="b" * (5 << 20))),
        ("5 MB comment", None, env(f"{PR_TOPIC}.comment.added", {"agent": "mallory", "pullrequest": big_comment})),
        ("500 deep, decodable", "deep", None),
        ("unicode garbage branch", None, pr_with(branch_from=garbage)),
        ("odd unicode branch", None, pr_with(branch_from=odd * 50)),
        ("unicode garbage project", None, pr_with(project={"name": garbage, "namespace": garbage})),
        ("unicode garbage topic", None, env(f"{PR_TOPIC}.{odd}", {"agent": "x", "pullrequest": pr})),
        ("build a string", None, env(BUILD_TOPIC, {"project": JOB, "build": "12"})),
        ("build a bool", None, env(BUILD_TOPIC, {"project": JOB, "build": True})),
        ("build 2**70", None, env(BUILD_TOPIC, {"project": JOB, "build": 2 ** 70})),
        ("build negative", None, env(BUILD_TOPIC, {"project": JOB, "build": -1})),
    ]
    deep_env = env(f"{PR_TOPIC}.new", None)
    deep_wire = json.dumps(deep_env).replace('"msg": null', '"msg": {"agent": "a", "pullrequest": ' + deep_pr + "}")
    expect = []  # (name, regex of its one decision line)
    for name, topic, body in cases:
        if name == "500 deep, decodable":
            publish_raw(hub, deep_env["topic"], deep_wire.encode())
            expect.append((name, rf"msg {re.escape(deep_env['msg_id'])} "))
        elif isinstance(body, bytes):
            publish_raw(hub, topic, body)
            expect.append((name, rf"msg - {re.escape(topic)}: "))
        else:
            hub.publish(body)
            expect.append((name, rf"msg {re.escape(body['msg_id'])} "))
    valid = messages.pr_new(good)
    hub.publish(valid)
    assert "trigger pungi-pr for pungi#8" in decided(hub, valid, timeout=20)
    harness.wait_until(lambda: jenkins.triggers, 10, "the valid PR's trigger")
    assert [t.params["BRANCH"] for t in jenkins.triggers] == ["good"]
    assert hub.alive()
    text = hub.log_text()
    lines = text.splitlines()
    verdicts = {}
    for name, pattern in expect:
        found = [line for line in lines if re.search(pattern, line)]
        assert len(found) == 1, f"{name}: {len(found)} lines {found!r}"
        line = found[0]
        verdict = re.search(r"(WARNING|DEBUG) poormanci \[[^]]*\] msg \S+ .*?: (malformed, dropped|refused|ignored)", line)
        assert verdict, f"{name}: {line[:500]!r}"
        assert (verdict[1] == "DEBUG") == (verdict[2] == "ignored"), line
        # Echoed values are bounded (4 KB fields, escaped): never the payload.
        assert len(line) < 32_000, f"{name}: a {len(line)}-character log line"
        verdicts[name] = verdict[2]
    assert len(text) < 1 << 20, "megabytes of input reached the log"
    clean_log(hub)
    figures("hostile", messages=len(cases), **collections.Counter(verdicts.values()),
            longest_line=max(len(line) for line in lines if " poormanci " in line), verdicts=verdicts)


# -- 6. flood ------------------------------------------------------------------------------

# The figure is 10 000; 2000 keeps CI under a minute with the Python
# stand-ins (POORMANCI_FLOOD=10000 for the full size).
FLOOD = int(os.environ.get("POORMANCI_FLOOD", 2000))
RSS_LIMIT_MB = 200
RSS_GROWTH_MB = 64
# Deadlines grow with a bigger flood: the Jenkins stand-in scans its whole queue per request.
SCALE = max(1.0, FLOOD / 2000)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def log_time(line: str) -> float:
    """The asctime of a hub log line, as epoch seconds."""
    stamp = line[:23]
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000


def test_flood_of_new_prs(jenkins, pagure, make_config, tmp_path):
    """2000 new PRs at once through the real hub (follow off: triggers and the
    pending flags only). The hub keeps deciding (a probe sent after the flood
    is decided right after the flood's last decision), its memory stays
    bounded, and every PR is triggered exactly once.

    Bound: the idle hub is ~60 MB; 2000 messages of ~3 KB, decoded by
    moksha and waiting in its queue, are ~20 MB at worst, the store's page
    cache a few MB and at most 256 requests are in flight: 200 MB leaves
    room for the allocator, never for per-message growth."""
    config = make_config(jenkins, pagure, jenkins={"follow": False})
    prs = add_prs(pagure, FLOOD)
    probe_pr = pagure.add_pr("pungi", FLOOD + 1, author="alice", branch_from="probe")
    hub = harness.Hub(config, tmp_path / "hub")
    # The test's publisher must not drop either (zmq's default high-water mark is 1000).
    hub._pub.setsockopt(zmq.SNDHWM, 0)
    peak = {"rss": 0.0}
    done = threading.Event()
    try:
        hub.start()
        pid = hub.proc.pid
        base = rss_mb(pid)

        def sample():
            while not done.is_set() and hub.alive():
                try:
                    peak["rss"] = max(peak["rss"], rss_mb(pid))
                except (OSError, AssertionError):
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        mark = hub.log_mark()
        sent = time.time()
        for pr in prs:
            hub.publish(messages.pr_new(pr))
        published = time.time()
        probe = messages.pr_new(probe_pr)
        hub.publish(probe)
        decision = re.compile(DECISION, re.M)
        harness.wait_until(lambda: len(decision.findall(hub.log_text(mark))) >= FLOOD + 1 or not hub.alive(),
                           45 * SCALE, f"{FLOOD + 1} decisions", interval=0.2)
        lines = [m[0] for m in decision.finditer(hub.log_text(mark))]
        order = [int(m) for m in decision.findall(hub.log_text(mark))]
        assert sorted(order) == list(range(1, FLOOD + 2)), "a message was lost or decided twice"
        assert order[-1] == FLOOD + 1, "the probe was not decided last"
        last_flood = max(log_time(line) for line, i in zip(lines, order) if i <= FLOOD)
        probe_at = log_time(lines[-1])
        harness.wait_until(lambda: len(jenkins.triggers) >= FLOOD + 1 or not hub.alive(), 45 * SCALE ** 2,
                           "every trigger", interval=0.2)
        triggered = time.time()
        # Follow is off: the runs stay open (a bus message would end them); no task is left.
        harness.wait_until(lambda: settled(config, runs=False), 30 * SCALE, "the store to settle", interval=0.2)
        done.set()
        peak["rss"] = max(peak["rss"], rss_mb(pid))
        assert hub.alive()
        per_pr = collections.Counter(t.params["BRANCH"] for t in jenkins.triggers)
        assert len(per_pr) == FLOOD + 1 and set(per_pr.values()) == {1}, per_pr.most_common(3)
        assert probe_at - last_flood < 2.0, (probe_at, last_flood)
        assert peak["rss"] < RSS_LIMIT_MB, f"peak RSS {peak['rss']:.0f} MB (idle {base:.0f} MB)"
        assert peak["rss"] - base < RSS_GROWTH_MB, f"peak RSS {peak['rss']:.0f} MB (idle {base:.0f} MB)"
        clean_log(hub)
        figures("flood", messages=FLOOD, publish_s=round(published - sent, 2),
                all_decided_s=round(probe_at - sent, 2), probe_after_last_s=round(probe_at - last_flood, 3),
                all_triggered_s=round(triggered - sent, 2), rss_idle_mb=round(base), rss_peak_mb=round(peak["rss"]),
                lost=0, duplicated=0)
    finally:
        done.set()
        hub.close()
        print(hub.log_tail(3000))
