"""poormanci on fedora-messaging: the real `fedora-messaging consume
--callback=poormanci.amqp:Consumer` on a real RabbitMQ (tests/rabbitmq.py),
with the stand-in Jenkins and Pagure; and the callback's own rules in-process."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("fedora_messaging", reason="fedora-messaging is not installed (pip install fedora-messaging)")
pika = pytest.importorskip("pika")

import messages  # noqa: E402
import rabbitmq  # noqa: E402
from fedora_messaging.exceptions import HaltConsumer, Nack  # noqa: E402
from harness import store_status, wait_until  # noqa: E402
from poormanci._core import Core  # noqa: E402

FEDORA_MESSAGING = Path(sys.prefix) / "bin" / "fedora-messaging"
CALLBACK = "poormanci.amqp:Consumer"
EXCHANGE = "amq.topic"
PAGURE_KEYS = "io.pagure.prod.pagure.pull-request.#"
JENKINS_KEYS = "org.fedoraproject.prod.jenkins.build.#"


# -- a TOML writer for what these configs hold ------------------------------------

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # TOML has no null: None means "leave it out"
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise TypeError(f"no TOML for {value!r}")


def write_toml(path: Path, url: str, queue: str, consumer_config: dict) -> Path:
    lines = [
        f"amqp_url = {toml_value(url)}",
        "[client_properties]", 'app = "poormanci tests"',
        f"[queues.{json.dumps(queue)}]", "durable = true", "auto_delete = false", "exclusive = false",
        "arguments = {}",
        "[[bindings]]", f"queue = {json.dumps(queue)}", f'exchange = "{EXCHANGE}"',
        f"routing_keys = {toml_value([PAGURE_KEYS, JENKINS_KEYS])}",
        "[consumer_config]",
        *(f"{json.dumps(k)} = {toml_value(v)}" for k, v in consumer_config.items() if v is not None),
        "[log_config]", "version = 1", "disable_existing_loggers = false",
        "[log_config.formatters.plain]", 'format = "%(asctime)s %(levelname)s %(name)s: %(message)s"',
        "[log_config.handlers.console]", 'class = "logging.StreamHandler"', 'formatter = "plain"',
        'stream = "ext://sys.stderr"',
        "[log_config.loggers.poormanci]", 'level = "DEBUG"', "propagate = false", 'handlers = ["console"]',
        "[log_config.root]", 'level = "INFO"', 'handlers = ["console"]',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the broker and the consumer process ------------------------------------------

@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    reason = rabbitmq.missing()
    if reason:
        pytest.skip(reason)
    with rabbitmq.RabbitMQ(tmp_path_factory.mktemp("rabbitmq")) as server:
        yield server


class ConsumerProcess:
    """`fedora-messaging consume` with poormanci, its own queue (or ``queue``,
    which other consumers may share), a log file."""

    def __init__(self, broker, consumer_config: dict, workdir: Path, queue: str | None = None):
        self.broker = broker
        self.queue = queue or f"poormanci-test-{uuid.uuid4().hex[:8]}"
        self.toml = write_toml(workdir / "poormanci.toml", broker.url, self.queue, consumer_config)
        self.log_path = workdir / "consumer.log"
        self.proc: subprocess.Popen | None = None
        self.workdir = workdir

    def declare(self):
        """The queue and bindings, as the TOML says: messages published before
        the consumer is up wait in the queue instead of being lost."""
        with pika.BlockingConnection(pika.URLParameters(self.broker.url)) as conn:
            channel = conn.channel()
            channel.queue_declare(self.queue, durable=True, auto_delete=False, exclusive=False)
            for key in (PAGURE_KEYS, JENKINS_KEYS):
                channel.queue_bind(self.queue, EXCHANGE, routing_key=key)

    def start(self) -> "ConsumerProcess":
        env = {k: v for k, v in os.environ.items() if k not in ("FEDORA_MESSAGING_CONF", "VIRTUAL_ENV")}
        env.update(PYTHONUNBUFFERED="1", HOME=str(self.workdir))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(FEDORA_MESSAGING), "--conf", str(self.toml), "consume", f"--callback={CALLBACK}"],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30.0):
        wait_until(lambda: text in self.log() or not self.alive(), timeout, f"{text!r} in the consumer log")
        assert text in self.log(), f"consumer exited ({self.proc.returncode}) before logging {text!r}"

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session
                self.proc.wait(10)
        return None if self.proc is None else self.proc.returncode


@pytest.fixture
def consumer(broker, tmp_path):
    """consumer(consumer_config) -> a declared, started ConsumerProcess; stopped at teardown."""
    started: list[ConsumerProcess] = []

    def start(consumer_config: dict, *, declare: bool = True) -> ConsumerProcess:
        workdir = tmp_path / f"consumer{len(started)}"
        workdir.mkdir()
        proc = ConsumerProcess(broker, consumer_config, workdir)
        started.append(proc)
        if declare:
            proc.declare()
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
        print(f"--- consumer log ({proc.log_path}) ---\n{proc.log()[-6000:]}")


def publish(broker, topic: str, body=None, *, raw: bytes | None = None, message_id: str | None = None,
            headers: dict | None = None) -> str:
    """Publish as fedora-messaging's publisher does (its headers and properties),
    with ``body`` as JSON or ``raw`` bytes as they are. Returns the message id.
    mandatory + confirms: an unroutable message is an error here, not lost."""
    message_id = message_id or str(uuid.uuid4())
    properties = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2, message_id=message_id,
        headers={"fedora_messaging_schema": "base.message", "fedora_messaging_severity": 20,
                 "sent-at": datetime.now(timezone.utc).isoformat(), "priority": 0, **(headers or {})})
    data = raw if raw is not None else json.dumps(body).encode()
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(EXCHANGE, topic, data, properties, mandatory=True)
    return message_id


def publish_envelope(broker, envelope: dict, **kw) -> str:
    """A fedmsg envelope as it travels on AMQP: the topic, and the payload as the body."""
    return publish(broker, envelope["topic"], envelope["msg"], **kw)


# -- end to end -----------------------------------------------------------------

# (jenkins and pagure come first: torn down after the consumer is stopped)
def test_consumer_triggers_survives_bad_messages_and_dedupes(jenkins, pagure, make_config, consumer, broker):
    pr1 = pagure.add_pr("pungi", branch_from="fix-1")
    proc = consumer(make_config(jenkins, pagure))
    new1 = messages.pr_new(pr1)
    publish_envelope(broker, new1, message_id=new1["msg_id"])

    trigger = wait_until(lambda: [t for t in jenkins.triggers if t.params.get("BRANCH") == "fix-1"], 30,
                         "Jenkins to get the trigger for PR 1")[0]
    assert trigger.job == "pungi-pr"
    assert trigger.params["REPO"] == f"{pagure.url}/forks/alice/pungi.git"
    assert trigger.token == "BEEFCAFE"

    # Garbage of every kind. Bodies that are not JSON objects never reach the
    # callback (fedora-messaging refuses them); the others do and are dropped.
    topic = new1["topic"]
    publish(broker, topic, raw=b"this is not JSON")
    publish(broker, topic, "a string")
    publish(broker, topic, [1, 2, 3])
    bad_ids = [publish(broker, topic, {"pullrequest": "not a dict"}),
               publish(broker, topic, {}),
               publish(broker, "org.fedoraproject.prod.jenkins.build.passed", {"project": ["x"], "build": "y"})]
    # The same message again (a redelivery, or a second publisher): no second build.
    publish_envelope(broker, new1, message_id=new1["msg_id"])

    pr2 = pagure.add_pr("pungi", branch_from="fix-2")
    publish_envelope(broker, messages.pr_new(pr2))
    wait_until(lambda: [t for t in jenkins.triggers if t.params.get("BRANCH") == "fix-2"], 30,
               "Jenkins to get the trigger for PR 2, after the bad messages")
    assert proc.alive()
    log = proc.log()
    for msg_id in bad_ids:  # they reached poormanci, which dropped them
        assert any(f"msg {msg_id} " in line and "malformed, dropped" in line for line in log.splitlines()), msg_id
    # fedora-messaging's own checks: not JSON, the string, the list.
    assert log.count("did not pass validation; ignoring message") == 3
    assert "Traceback" not in log
    # Queue order is handling order: by PR 2's trigger, the duplicate was decided on.
    assert len([t for t in jenkins.triggers if t.params.get("BRANCH") == "fix-1"]) == 1


def test_a_recorded_pagure_message_is_checked_by_its_schema(jenkins, pagure, make_config, consumer, broker):
    """The amqp extra installs pagure-messages: a message as Pagure 5.13 sent
    it (its schema headers) is validated by Pagure's schema, without the
    "not in the schema registry" WARNING, and handled."""
    record = next(r for r in messages.recording(envelopes=False) if r["topic"].endswith(".pull-request.new"))
    assert record["headers"]["fedora_messaging_schema_package"] == "pagure_messages"
    pagure.load_pr(record["body"]["pullrequest"])  # poormanci reads the PR from Pagure before building it
    proc = consumer(make_config(jenkins, pagure))
    publish(broker, record["topic"], record["body"], message_id=record["id"], headers=record["headers"])
    wait_until(lambda: [t for t in jenkins.triggers if t.params.get("BRANCH") == record["body"]["pullrequest"]["branch_from"]],
               30, "the trigger of the recorded PR")
    log = proc.log()
    assert "not in the schema registry" not in log and "Falling back to the default schema" not in log, log[-3000:]


def test_the_amqp_path_needs_no_fedmsg(jenkins, pagure, make_config, tmp_path):
    """An AMQP-only install (README): the callback and check-config --toml
    work with fedmsg and moksha unimportable."""
    for project in ("pungi", "rpms/python-foo"):  # check-config asks Pagure about them
        pagure.add_project(project)
    toml = write_toml(tmp_path / "poormanci.toml", "amqp://127.0.0.1:1/%2F", "q", make_config(jenkins, pagure))
    code = "\n".join([
        "import sys",
        "for name in ('fedmsg', 'fedmsg.config', 'fedmsg.consumers', 'moksha', 'moksha.hub'):",
        "    sys.modules[name] = None  # any import of them now fails",
        "from poormanci.cli import main",
        "import poormanci.amqp",
        f"sys.exit(main(['check-config', '--toml', {str(toml)!r}]))",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout.splitlines()


def test_consumer_stops_cleanly_on_sigterm_and_work_survives(jenkins, pagure, make_config, consumer, broker):
    config = make_config(jenkins, pagure)
    jenkins.down()  # the trigger fails and stays pending in the state store
    pr = pagure.add_pr("pungi", branch_from="fix-9")
    proc = consumer(config)
    msg_id = publish_envelope(broker, messages.pr_new(pr))
    proc.wait_for_log(f"msg {msg_id} ")
    wait_until(lambda: any(t["attempts"] for t in store_status(config)["tasks"]), 30,
               "the trigger to fail once")
    assert proc.stop() == 0
    [task] = store_status(config)["tasks"]
    assert (task["kind"], task["pr"]) == ("trigger", pr["id"])

    # The next consumer on the same state_dir resumes it once Jenkins is back.
    jenkins.up()
    consumer(config)
    wait_until(lambda: [t for t in jenkins.triggers if t.params.get("BRANCH") == "fix-9"], 30,
               "the resumed trigger")


@pytest.mark.sqlite_only("another process write-locks the SQLite file")
def test_a_kill_in_a_burst_loses_nothing_and_builds_nothing_twice(jenkins, pagure, make_config, consumer, broker):
    """A message is acknowledged only once the state store recorded it: SIGKILL
    in the middle of a burst of 200 PRs, start again: 200 builds, none twice."""
    jenkins.queue_delay = 600  # builds wait in the queue: a trigger sent again merges, as in Jenkins
    config = make_config(jenkins, pagure)
    prs = [pagure.add_pr("pungi", branch_from=f"burst-{i}") for i in range(200)]
    proc = consumer(config)
    for pr in prs[:50]:
        publish_envelope(broker, messages.pr_new(pr))
    wait_until(lambda: len(jenkins.triggers) >= 40, 60, "the burst under way")
    # The store stops taking writes (another process holds its lock, as a full
    # disk would): what the broker gives from now on is not recorded...
    locker = sqlite3.connect(Path(config["poormanci.state_dir"]) / "poormanci.sqlite3", isolation_level=None,
                             timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for pr in prs[50:]:
            publish_envelope(broker, messages.pr_new(pr))
        proc.wait_for_log("the state store")
        # ... and the process dies.
        os.killpg(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(10)
    finally:
        locker.rollback()
        locker.close()
    proc.start()  # the same queue and state_dir

    def builds() -> dict:
        counts: dict = {}
        for t in jenkins.triggers:
            if not t.merged:  # a trigger sent again after the kill merges into its queue item
                counts[t.params["BRANCH"]] = counts.get(t.params["BRANCH"], 0) + 1
        return counts
    wait_until(lambda: len(builds()) == 200, 120, "a build of every PR")
    assert set(builds().values()) == {1}


def test_a_bad_consumer_config_exits_with_the_problems(jenkins, pagure, make_config, consumer):
    config = make_config(jenkins, pagure)
    del config["poormanci.pagure"]["token"]
    config["poormanci.jenkins"]["poll_interval"] = "fast"
    proc = consumer(config, declare=False)
    assert proc.proc.wait(60) == 78  # EX_CONFIG: not restarted by systemd
    log = proc.log()
    assert "poormanci.pagure.token: missing" in log
    assert "poormanci.jenkins.poll_interval" in log
    assert "poormanci is not started: 2 problem(s)" in log
    assert "Traceback" not in log


@pytest.mark.sqlite_only("the state_dir lock of the SQLite store")
def test_a_locked_state_dir_exits_with_one_line(jenkins, pagure, make_config, consumer):
    config = make_config(jenkins, pagure)
    hub = Core(config)  # another poormanci holds state_dir/lock
    try:
        proc = consumer(config, declare=False)
        assert proc.proc.wait(60) == 78  # EX_CONFIG: not restarted by systemd
        assert "poormanci is not started: state_dir" in proc.log()
        assert "Traceback" not in proc.log()
    finally:
        hub.close()


# -- the callback's rules, in-process ------------------------------------------------

@pytest.fixture(autouse=True)
def _keep_the_poormanci_log_level():
    # Consumer() sets the "poormanci" logger to INFO when unset: not for the next tests.
    logger = logging.getLogger("poormanci")
    level = logger.level
    yield
    logger.setLevel(level)


class FakeMessage:
    def __init__(self, topic, body, id="2024-test"):
        self.topic, self.body, self.id = topic, body, id


def test_callback_takes_any_body_without_raising(jenkins, pagure, make_config):
    from poormanci.amqp import Consumer

    cb = Consumer(make_config(jenkins, pagure))
    try:
        topic = "io.pagure.prod.pagure.pull-request.new"
        for body in ("a string", [1, 2], None, 3, {"pullrequest": {"id": "x"}}, {}):
            assert cb(FakeMessage(topic, body)) is None
        assert cb(FakeMessage(None, {})) is None
    finally:
        cb.close()


def test_callback_gives_messages_back_once_closed(jenkins, pagure, make_config):
    from poormanci.amqp import Consumer

    cb = Consumer(make_config(jenkins, pagure))
    cb.close()
    cb.close()  # idempotent: atexit calls it again
    with pytest.raises(Nack):
        cb(FakeMessage("io.pagure.prod.pagure.pull-request.new", {}))


def test_callback_halts_and_requeues_when_the_core_is_gone(jenkins, pagure, make_config):
    from poormanci.amqp import Consumer

    class BrokenCore:
        def handle_recorded(self, topic, envelope):
            raise RuntimeError("poormanci is stopped")

        def close(self, timeout):
            pass

    cb = Consumer(make_config(jenkins, pagure))
    real, cb.core = cb.core, BrokenCore()
    real.close()
    with pytest.raises(HaltConsumer) as e:
        cb(FakeMessage("io.pagure.prod.pagure.pull-request.new", {}))
    assert e.value.requeue and e.value.exit_code == 1


def test_callback_drops_a_message_on_any_other_error(jenkins, pagure, make_config, caplog):
    from poormanci.amqp import Consumer

    class BuggyCore:
        def handle_recorded(self, topic, envelope):
            raise TypeError("a bug")

        def close(self, timeout):
            pass

    cb = Consumer(make_config(jenkins, pagure))
    real, cb.core = cb.core, BuggyCore()
    real.close()
    assert cb(FakeMessage("io.pagure.prod.pagure.pull-request.new", {}, id="m-1")) is None
    assert "msg m-1 io.pagure.prod.pagure.pull-request.new: dropped: internal error" in caplog.text


def test_callback_warns_about_topics_no_binding_routes(jenkins, pagure, make_config, monkeypatch, caplog):
    import poormanci.amqp

    monkeypatch.setattr(poormanci.amqp.fm_config, "conf", {"bindings": [
        {"queue": "q", "exchange": EXCHANGE, "routing_keys": [PAGURE_KEYS]}]})
    poormanci.amqp.Consumer(make_config(jenkins, pagure)).close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["no binding routes org.fedoraproject.prod.jenkins.build.# to the queue: "
                        "poormanci will not see those messages"]
