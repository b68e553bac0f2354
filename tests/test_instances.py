"""Several poormanci instances sharing one PostgreSQL state store (issue 16).

Three real fedmsg-hubs that all hear every message (fedmsg broadcasts), three
fedora-messaging consumers competing on one RabbitMQ queue (each message
reaches one of them), and a SIGKILL of one hub in the middle of a burst. Each
instance has its own working folder and state_dir; they share one database.

What is counted is what the stand-ins saw, per PR: trigger requests per
commit in Jenkins (merged ones included: two instances sending one trigger
would show even where Jenkins folds them into one queue item), builds, the
flag on the PR's head, poormanci's comments and every flag POST — and only
once the state store says nothing is left to do.

These run in the PostgreSQL pass (``make test-postgresql``).
"""

from __future__ import annotations

import collections
import time

import pytest

import messages
import postgres
from harness import Hub, store_status, wait_until
from test_reliability import bot_comments, clean_log, figures

pytestmark = pytest.mark.postgresql_only

JOB = "pungi-pr"
N_PRS = 200
INSTANCES = 3
LEASE = 5  # seconds: a dead instance's claims are taken over this long after its last word
MARGIN = 15  # seconds on top of the lease for the others to notice and do the work


# -- the instances ----------------------------------------------------------------

@pytest.fixture
def shared_store(postgresql, tmp_path):
    """One database for all the instances of a test, with a short lease."""
    return postgresql.store_config(postgres.database_for(tmp_path / "shared-store"), lease=LEASE)


@pytest.fixture
def hubs(tmp_path):
    """hubs(configs) -> started Hubs, one per config, each with its own
    folder; the first one's publisher reaches them all. Closed at teardown."""
    started: list[Hub] = []

    def start(configs: list[dict]) -> list[Hub]:
        for i, config in enumerate(configs):
            bus = started[0] if started else None
            started.append(Hub(config, tmp_path / f"hub{i}", bus=bus).start(ready=False))
        for hub in started:  # launched together, waited for one by one (one publisher, one thread)
            hub.wait_ready(60)
        return started

    yield start
    for hub in reversed(started):  # the publisher's owner last
        hub.close()
    for hub in started:
        print(hub.log_tail(3000))


def instance_configs(make_config, jenkins, pagure, tmp_path, store, /, **overrides) -> list[dict]:
    return [make_config(jenkins, pagure, state_dir=tmp_path / f"state{i}", store=store, **overrides)
            for i in range(INSTANCES)]


def settled(config) -> bool:
    """The shared store holds no task and no open run."""
    try:
        status = store_status(config)
    except RuntimeError:
        return False
    return not status["tasks"] and not status["open_runs"]


# -- the burst --------------------------------------------------------------------

class Burst:
    """``n`` new PRs of pungi and, with ``follow_ups``, what happens next to
    each, by its number:
    1 mod 4: a push, announced by ``pull-request.updated`` and Pagure's
             notification comment (two messages, one build);
    2 mod 4: a push announced by the notification comment alone (older Pagure);
    3 mod 4: ``/retest`` by a trusted person once the first result is in
             (a second build of the same commit);
    0 mod 4: nothing more.
    A push is made once the PR's first trigger reached Jenkins, so that it
    supersedes a run under way (or done) rather than the first decision."""

    def __init__(self, jenkins, pagure, n: int, *, follow_ups: bool = True):
        self.jenkins, self.pagure, self.n, self.follow_ups = jenkins, pagure, n, follow_ups
        self.prs = {i: pagure.add_pr("pungi", i, author="alice", branch_from=f"burst-{i}") for i in range(1, n + 1)}
        self.first_commit = {i: pr["commit_stop"] for i, pr in self.prs.items()}
        self.sent: list[dict] = []  # every envelope published, in order
        self.pushes: list[tuple[dict, dict]] = []  # (updated, comment), both published

    def kind(self, i: int) -> str:
        return {1: "push", 2: "comment-push", 3: "retest", 0: "new"}[i % 4] if self.follow_ups else "new"

    def run(self, publish, timeout: float = 120.0):
        """Publish the new PRs, then each follow-up as soon as its PR is ready for it."""
        for pr in self.prs.values():
            self.publish(publish, messages.pr_new(pr))
        waiting = {i for i in self.prs if self.kind(i) != "new"}

        def follow_ups() -> bool:
            triggered = set(self.triggers())
            for i in sorted(waiting):
                kind = self.kind(i)
                if kind in ("push", "comment-push") and i in triggered:
                    updated, comment = self.pagure.push("pungi", i)
                    if kind == "push":
                        self.publish(publish, updated)
                        self.pushes.append((updated, comment))
                    self.publish(publish, comment)
                    waiting.discard(i)
                elif kind == "retest" and [f for f in self.pagure.flags("pungi", i) if f["status"] != "pending"]:
                    self.publish(publish, self.pagure.add_comment("pungi", i, "/retest", "bob"))
                    waiting.discard(i)
            return not waiting

        try:
            wait_until(follow_ups, timeout, "every follow-up sent (a push after the first trigger, /retest "
                       "after the first result)", interval=0.1)
        except AssertionError as e:
            triggers = self.triggers()
            stuck = {i: (self.kind(i), len(triggers[i]), [f["status"] for f in self.pagure.flags("pungi", i)])
                     for i in sorted(waiting)[:10]}
            raise AssertionError(f"{e}; {len(waiting)} PRs still waiting, the first ones (kind, trigger "
                                 f"requests, head flags): {stuck}") from None

    def publish(self, publish, envelope: dict):
        self.sent.append(envelope)
        publish(envelope)

    # -- what the stand-ins hold, by PR -------------------------------------------
    def pr_of(self, note: str | None) -> int | None:
        """The PR of poormanci's cause "<pr url> [poormanci run N]"."""
        prefix = f"{self.pagure.url}/pungi/pull-request/"
        if note and note.startswith(prefix) and " [poormanci run " in note:
            return int(note[len(prefix):].split(" ", 1)[0])
        return None

    def triggers(self) -> dict[int, list]:
        found = collections.defaultdict(list)
        for t in list(self.jenkins.triggers):
            if self.pr_of(t.cause) is not None:
                found[self.pr_of(t.cause)].append(t)
        return found

    def builds(self) -> dict[int, list[dict]]:
        found = collections.defaultdict(list)
        for b in self.jenkins.builds(JOB):
            prs = {self.pr_of(c.get("note")) for a in b["actions"] for c in a.get("causes", [])} - {None}
            if len(prs) == 1:
                found[prs.pop()].append(b)
        return found

    def expected_triggers(self, i: int, head: str) -> dict[str, int]:
        """Queue items Jenkins should hold for PR i, by commit."""
        return {"retest": {head: 2}, "new": {head: 1}}.get(self.kind(i), {self.first_commit[i]: 1, head: 1})

    def unfinished(self, config) -> str:
        """What is not finished yet ("" once every PR's head has each of its
        builds finished, flagged and commented, the last thing a report does,
        and the store has nothing left to do)."""
        builds = self.builds()
        for i in self.prs:
            head = self.pagure.pr("pungi", i)["commit_stop"]
            flags = self.pagure.flags("pungi", i)
            if not any(f["status"] == "success" and head[:8] in f["comment"] for f in flags):
                return f"PR {i}: head flags {[(f['status'], f['comment']) for f in flags]}"
            mine = [b for b in builds[i] if commit_of(b) == head and not b["building"]]
            if len(mine) != self.expected_triggers(i, head)[head]:
                return f"PR {i}: {len(mine)} finished builds of the head"
            comments = bot_comments(self.pagure, i)
            if not all(naming(comments, b["number"]) for b in mine):
                return f"PR {i}: comments {[c['comment'] for c in comments]}"
        try:
            status = store_status(config)
        except RuntimeError as e:
            return f"the store cannot be read: {e}"
        if status["tasks"] or status["open_runs"]:
            return f"the store holds tasks {status['tasks'][:3]} and open runs {status['open_runs'][:3]}"
        return ""

    def wait_done(self, config, timeout: float, instances: list):
        """Until nothing is unfinished; fails at once if an instance died."""
        try:
            wait_until(lambda: not self.unfinished(config) or not all(p.alive() for p in instances), timeout,
                       "every PR built and reported, the store settled", interval=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}; unfinished: {self.unfinished(config)}") from None
        assert all(p.alive() for p in instances), "an instance died"

    def account(self, *, resent_allowed: set[int] = frozenset()) -> dict:
        """Assert, per PR: queue items per commit as expected, and as many
        trigger requests (merged ones only where ``resent_allowed``: a trigger
        whose answer died with its instance); no more builds than queue items;
        one flag on the head, the newest build's success; one comment per
        build of the head, at most one per older build; no flag POST made
        twice (two instances reporting the same thing). Return the figures."""
        triggers, builds = self.triggers(), self.builds()
        history = collections.defaultdict(list)
        for h in list(self.pagure.flag_history):
            history[h["id"]].append(h)
        problems, merged = {}, 0
        for i in self.prs:
            head = self.pagure.pr("pungi", i)["commit_stop"]
            sent = collections.Counter(t.params["COMMIT"] for t in triggers[i])
            items = collections.Counter(t.params["COMMIT"] for t in triggers[i] if not t.merged)
            merged += sum(sent.values()) - sum(items.values())
            wrong = []
            if dict(items) != self.expected_triggers(i, head):
                wrong.append(f"queue items by commit {dict(items)}, expected {self.expected_triggers(i, head)}")
            if sent != items and i not in resent_allowed:
                wrong.append(f"trigger requests by commit {dict(sent)}: one sent twice")
            if len(builds[i]) > sum(items.values()):
                wrong.append(f"{len(builds[i])} builds for {sum(items.values())} queue items")
            # One flag, the newest build's result: no older report or pending flag over it.
            newest = max((b["number"] for b in builds[i] if commit_of(b) == head), default=None)
            flags = [(f["status"], f["comment"]) for f in self.pagure.flags("pungi", i)]
            if len(flags) != 1 or flags[0] != ("success", f"Build {newest} successful (commit {head[:8]})"):
                wrong.append(f"head flags {flags}, newest build {newest}")
            comments = bot_comments(self.pagure, i)
            for b in builds[i]:
                said = len(naming(comments, b["number"]))
                if said > 1 or (said == 0 and commit_of(b) == head):
                    wrong.append(f"{said} comments on build {b['number']}")
            # Only where one run ever flagged the PR: a second run of one commit
            # posts "Build queued" again, and so may an older commit's run on
            # the new head a push made meanwhile (Pagure flags the PR's head).
            if self.kind(i) == "new":
                posts = collections.Counter((h["commit"], h["data"].get("status"), h["data"].get("comment"))
                                            for h in history[i])
                twice = [k for k, c in posts.items() if c > 1]
                if twice and i not in resent_allowed:
                    wrong.append(f"flag POSTs made twice: {twice}")
            if wrong:
                problems[i] = f"{self.kind(i)}: " + "; ".join(wrong)
        assert not problems, f"{len(problems)} PRs wrong: {problems}"
        return {"prs": self.n, "messages": len(self.sent), "trigger_requests": len(self.jenkins.triggers),
                "merged_triggers": merged}


def commit_of(build: dict) -> str | None:
    for action in build["actions"]:
        for p in action.get("parameters", []):
            if p.get("name") == "COMMIT":
                return p.get("value")
    return None


def naming(comments: list[dict], number: int) -> list[dict]:
    """The comments about build ``number`` (its URL ends in /<number>/)."""
    return [c for c in comments if f"/job/{JOB}/{number}/" in c["comment"]]


def triggers_by_hub(hubs: list[Hub]) -> list[int]:
    """How many triggers each hub got answered (its log): the work was shared."""
    return [hub.log_text().count(": queued as") for hub in hubs]


# -- (a) fedmsg: every hub hears every message ---------------------------------------------

def test_three_hubs_hearing_every_message_build_and_report_each_once(jenkins, pagure, make_config, hubs,
                                                                      shared_store, tmp_path):
    configs = instance_configs(make_config, jenkins, pagure, tmp_path, shared_store)
    running = hubs(configs)
    burst = Burst(jenkins, pagure, N_PRS)
    started = time.monotonic()
    burst.run(running[0].publish)
    burst.wait_done(configs[0], 180, running)
    took = time.monotonic() - started
    result = burst.account()
    assert result["merged_triggers"] == 0, "a trigger was sent twice"
    for hub in running:
        clean_log(hub)
    figures("instances-fedmsg", **result, seconds=round(took, 1), triggers_by_hub=triggers_by_hub(running))


# -- (b) fedora-messaging: competing consumers on one queue ---------------------------------

@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    pytest.importorskip("fedora_messaging", reason="fedora-messaging is not installed")
    import rabbitmq

    reason = rabbitmq.missing()
    if reason:
        pytest.skip(reason)
    with rabbitmq.RabbitMQ(tmp_path_factory.mktemp("rabbitmq")) as server:
        yield server


def test_three_consumers_on_one_queue_build_and_report_each_once(jenkins, pagure, make_config, shared_store,
                                                                  broker, tmp_path):
    pika = pytest.importorskip("pika")
    from test_amqp import ConsumerProcess, publish_envelope

    configs = instance_configs(make_config, jenkins, pagure, tmp_path, shared_store)
    queue = "poormanci-instances"
    consumers = []
    for i, config in enumerate(configs):
        workdir = tmp_path / f"consumer{i}"
        workdir.mkdir()
        consumers.append(ConsumerProcess(broker, config, workdir, queue=queue))
    consumers[0].declare()
    try:
        for proc in consumers:
            proc.start()

        def consumers_on_queue() -> int:
            with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
                return conn.channel().queue_declare(queue, passive=True).method.consumer_count
        wait_until(lambda: consumers_on_queue() == INSTANCES or not all(p.alive() for p in consumers), 60,
                   "three consumers on the queue", interval=0.5)
        assert all(p.alive() for p in consumers), "a consumer exited"

        burst = Burst(jenkins, pagure, N_PRS)
        started = time.monotonic()
        burst.run(lambda env: publish_envelope(broker, env, message_id=env["msg_id"]))
        burst.wait_done(configs[0], 180, consumers)
        took = time.monotonic() - started
        result = burst.account()
        assert result["merged_triggers"] == 0, "a trigger was sent twice"

        # Each message reached one consumer; a push's two messages often two of them.
        logs = [p.log() for p in consumers]
        def handled_by(envelope) -> list[int]:
            return [n for n, log in enumerate(logs) if f"msg {envelope['msg_id']} " in log]
        assert all(len(handled_by(env)) == 1 for env in burst.sent), "a message reached no consumer, or two"
        split = sum(handled_by(updated) != handled_by(comment) for updated, comment in burst.pushes)
        assert split, "no push had its two messages on two consumers: the case was not exercised"
        for log in logs:
            assert "Traceback" not in log
        figures("instances-amqp", **result, seconds=round(took, 1), pushes=len(burst.pushes),
                pushes_split_across_consumers=split,
                messages_by_consumer=[sum(f"msg {e['msg_id']} " in log for e in burst.sent) for log in logs])
    finally:
        for proc in consumers:
            proc.stop()
            print(f"--- consumer log ({proc.log_path}) ---\n{proc.log()[-3000:]}")


# -- (c) SIGKILL of one hub in the middle of a burst ----------------------------------------

def test_sigkill_of_one_hub_in_a_burst_its_claims_are_taken_over(jenkins, pagure, make_config, hubs,
                                                                  shared_store, tmp_path):
    """Jenkins answers triggers slowly (1 s; 2 at a time from each hub). Once
    20 PRs have their trigger, the hub that sent a trigger Jenkins is still
    holding (a task it claimed) is SIGKILLed.

    Its answer is lost; the others take its claims over once the lease ends,
    so every PR has its trigger within lease + margin of the kill. A trigger
    that reached Jenkins before the kill may be sent again: Jenkins folds it
    into the queue item still waiting (queue_delay outlasts the takeover).
    Every PR: one queue item, one build, one flag, one comment."""
    configs = instance_configs(make_config, jenkins, pagure, tmp_path, shared_store, jenkins={"concurrency": 2})
    jenkins.slow, jenkins.queue_delay = 1.0, LEASE + MARGIN + 5
    running = hubs(configs)
    burst = Burst(jenkins, pagure, N_PRS, follow_ups=False)
    burst.run(running[0].publish)  # the publisher is this process's: it outlives its hub

    def held() -> list:
        return [r for r in list(jenkins.requests) if r.status is None and r.path.endswith("/buildWithParameters")]

    def holder():
        """A hub with a trigger in flight (once 20 PRs have theirs)."""
        if len(burst.triggers()) < 20:
            return None
        requests = held()
        return next(((hub, requests) for hub in running for r in requests if hub.made_request(r)), None)
    victim, _ = wait_until(holder, 60, "20 PRs triggered, and a hub with a trigger held by Jenkins")
    victim.kill()
    killed_at, killed_wall = time.monotonic(), time.time()
    # The triggers whose answer may have died with the victim (still held, or
    # answered too shortly before the kill for it to record them): these may
    # be sent again. A trigger takes `slow` seconds to answer.
    late = [r for r in list(jenkins.requests) if r.path.endswith("/buildWithParameters")
            and (r.status is None or killed_wall - r.time < jenkins.slow + 1.0)]
    jenkins.slow = 0.0
    survivors = [hub for hub in running if hub is not victim]
    held_prs = {int(r.form["BRANCH"].split("-")[1]) for r in late}
    wait_until(lambda: set(burst.triggers()) == set(burst.prs), LEASE + MARGIN,
               f"a trigger of every PR within the lease ({LEASE} s) + {MARGIN} s of the kill", interval=0.1)
    takeover = time.monotonic() - killed_at
    burst.wait_done(configs[running.index(survivors[0])], jenkins.queue_delay + 60, survivors)
    result = burst.account(resent_allowed=held_prs)
    for hub in survivors:
        clean_log(hub)
    figures("instances-sigkill", **result, lease=LEASE, every_pr_triggered_after_kill_s=round(takeover, 1),
            held_at_kill=len(held_prs), triggers_by_hub=triggers_by_hub(running),
            victim=running.index(victim))
