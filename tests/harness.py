"""Run the real fedmsg-hub with poormanci, feed it bus messages, read its log.

The hub runs from the venv this Python belongs to (``<sys.prefix>/bin/fedmsg-hub``)
in a folder of its own holding ``fedmsg.d/``; messages reach it from a zmq PUB
socket that this process binds on one of the hub's endpoints.

What the stock fedmsg-hub needs, and does, that this relies on:
- it merges the ``config`` dicts of ``./fedmsg.d/*.py`` (the working folder),
  ``~/.fedmsg.d/`` and ``$VIRTUAL_ENV/etc/fedmsg.d/`` (so HOME and
  VIRTUAL_ENV are pointed away); ``validate_signatures`` must be present, and
  endpoints must say 127.0.0.1, never "localhost" (moksha rejects it);
- moksha loads consumers through pkg_resources and, when that fails, keeps
  running with none, logging errors only: start() insists on the line
  ``enabled by config - poormanci.consumer:Integrator``;
- zmq drops what is sent in the first moments after the hub's SUB socket
  connects (slow joiner): start() waits for ``Running the MokshaHub reactor``,
  then sends probe messages until the core logs one;
- the wire message is ``[topic, json envelope]`` with the envelope
  ``{"topic", "msg", "msg_id", "timestamp", "i"}`` (tests/messages.py);
- SIGTERM stops it in about a second.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import zmq

import messages

CONSUMER = "poormanci.consumer:Integrator"
# POORMANCI_TEST_STORE=postgresql: make_config gives every state_dir a database
# of its own on the session's PostgreSQL (tests/postgres.py); default sqlite.
STORE_ENV = "POORMANCI_TEST_STORE"
# Seconds a claimed task is held by a hub before another may take it over.
# Short: tests restart a SIGKILLed hub and wait ~30 s for its work.
TEST_LEASE = 5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
PROBE_TOPIC = "org.fedoraproject.prod.jenkins.build.passed"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, message: str = "condition",
               interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy, and return that;
    raise AssertionError naming ``message`` (and the last value) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {value!r})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_backend() -> str:
    """The state store backend the tests run on: ``sqlite`` or ``postgresql``."""
    backend = os.environ.get(STORE_ENV) or "sqlite"
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"{STORE_ENV}={backend!r}: expected sqlite or postgresql")
    return backend


def make_config(jenkins, pagure, /, state_dir, **overrides) -> dict:
    """A complete poormanci config for these stand-ins. ``overrides``: a key
    without its ``poormanci.`` prefix; ``pagure=`` and ``jenkins=`` are merged
    into their sections, anything else replaces the value.

    Under POORMANCI_TEST_STORE=postgresql it also has a ``poormanci.store``
    section: the database of this state_dir (the same folder, the same
    database) on the session's PostgreSQL."""
    config = {
        "poormanci.enabled": True,
        "poormanci.pagure": {"url": pagure.url, "token": pagure.token, "user": pagure.user,
                             "topic": pagure.prefix, "timeout": 5},
        "poormanci.jenkins": {"url": jenkins.url, "topic": "org.fedoraproject.prod.jenkins",
                              "poll_interval": 0.2, "timeout": 5},
        "poormanci.projects": {
            "pungi": [{"job": "pungi-pr", "token": "BEEFCAFE"}],
            "rpms/python-foo": [{"job": "folder/python-foo", "token": "F00"}],
        },
        "poormanci.state_dir": str(state_dir),
        # The authors most tests use; the trust tests set their own.
        "poormanci.trusted": {"users": ["alice", "bob", "carol"], "committers": True},
    }
    if jenkins.user:
        config["poormanci.jenkins"].update(user=jenkins.user, api_token=jenkins.api_token)
    if store_backend() == "postgresql":
        import postgres  # only here: the SQLite pass needs no PostgreSQL
        config["poormanci.store"] = postgres.shared().store_config(postgres.database_for(state_dir),
                                                                       lease=TEST_LEASE)
    for key, value in overrides.items():
        if key in ("pagure", "jenkins"):
            config[f"poormanci.{key}"].update(value)
        else:
            config[f"poormanci.{key}"] = value
    return config


def store_status(config: dict) -> dict:
    """What the state store of ``config`` holds (``poormanci._core.read_status``:
    open runs, tasks): the SQLite file in its state_dir, or its PostgreSQL
    database. Raises RuntimeError while there is no store yet."""
    from poormanci._core import read_status

    if config.get("poormanci.store", {}).get("backend") == "postgresql":
        return read_status(config)
    return read_status(config["poormanci.state_dir"])


class Hub:
    """The real fedmsg-hub running poormanci with ``config`` (the poormanci.* keys).

    ``workdir`` holds fedmsg.d/ and hub.log (a new temp folder by default).
    ``consumer`` is the consumer whose loading ``start()`` insists on;
    ``args`` extra command-line arguments for fedmsg-hub, ``env`` extra
    environment variables (bench/ uses both for its probe). ``bus``: another
    Hub whose publisher this one listens to as well (several hubs hearing
    every message, as fedmsg hubs all hear every endpoint); its ``publish``
    then reaches them all.
    """

    def __init__(self, config: dict, workdir: str | Path | None = None, *,
                 consumer: str = CONSUMER, workers: int | None = None, args=(),
                 env: dict | None = None, bus: "Hub | None" = None):
        self.config = dict(config)
        self.args, self.extra_env = list(args), dict(env or {})
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="poormanci-hub-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "hub.log"
        self.consumer = consumer
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        if bus is None:
            self._ctx: zmq.Context | None = zmq.Context()
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            self.endpoint_port = self._pub.bind_to_random_port("tcp://127.0.0.1")
        else:  # the other hub's socket: it closes it
            self._ctx, self._pub, self.endpoint_port = None, bus._pub, bus.endpoint_port
        self.publish_port = free_port()
        self._log_start = 0  # log offset where the current run began
        self._write_config()

    def set_config(self, config: dict):
        """A new poormanci config for the next start (a token renewed, ...)."""
        self.config = dict(config)
        self._write_config()

    def _write_config(self):
        base = {
            "topic_prefix": "org.fedoraproject", "environment": "prod",
            "zmq_enabled": True, "sign_messages": False, "validate_signatures": False,
            # moksha rejects "localhost": endpoints must say 127.0.0.1.
            "endpoints": {"poormanci-tests.local": [f"tcp://127.0.0.1:{self.endpoint_port}"]},
            "zmq_publish_endpoints": f"tcp://127.0.0.1:{self.publish_port}",
            "logging": {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": LOG_FORMAT}},
                "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                                         "stream": "ext://sys.stderr"}},
                "loggers": {
                    "poormanci": {"level": "DEBUG", "propagate": False, "handlers": ["console"]},
                    # pyo3-log names Rust loggers after the crate ("_core::...") unless the
                    # core logs with target "poormanci::...": show those at DEBUG too.
                    "_core": {"level": "DEBUG", "propagate": False, "handlers": ["console"]},
                    "fedmsg": {"level": "INFO", "propagate": False, "handlers": ["console"]},
                    "moksha": {"level": "INFO", "propagate": False, "handlers": ["console"]},
                },
                "root": {"level": "INFO", "handlers": ["console"]},
            },
        }
        if self.workers:
            base["moksha.workers_per_consumer"] = self.workers
        confd = self.workdir / "fedmsg.d"
        confd.mkdir(exist_ok=True)
        # repr() of a dict of plain values is valid Python: fedmsg exec()s these files.
        (confd / "base.py").write_text(f"config = {base!r}\n")
        (confd / "poormanci.py").write_text(f"config = {self.config!r}\n")

    # -- process --------------------------------------------------------------
    def start(self, timeout: float = 30.0, *, ready: bool = True, probe: bool = True,
              enabled: bool = True) -> "Hub":
        """Start fedmsg-hub and wait until the consumer is loaded (``enabled``;
        False: until moksha says it is disabled), the reactor runs and (with
        ``probe``) a probe message has come through. ``ready=False`` only
        launches it (for a hub expected to refuse its config)."""
        assert not self.alive(), "hub already running"
        venv_bin = Path(sys.prefix) / "bin"
        # VIRTUAL_ENV: its etc/fedmsg.d too; PYTHONPATH: only what ``env`` sets.
        env = {k: v for k, v in os.environ.items()
               if k not in ("RUST_BACKTRACE", "VIRTUAL_ENV", "PYTHONPATH")}
        env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
                   HOME=str(self.workdir), **self.extra_env)  # HOME: keep ~/.fedmsg.d out of it
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.proc = subprocess.Popen([str(venv_bin / "fedmsg-hub"), *self.args], cwd=self.workdir,
                                         env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if not ready:
            return self
        return self.wait_ready(timeout, probe=probe, enabled=enabled)

    def wait_ready(self, timeout: float = 30.0, *, probe: bool = True, enabled: bool = True) -> "Hub":
        """What ``start()`` waits for (several hubs can be launched with
        ``ready=False`` first, then waited for one by one)."""
        word = "enabled" if enabled else "disabled"
        self.wait_for_log(rf"{word} by config\s+-\s+{re.escape(self.consumer)}", timeout)
        self.wait_for_log(r"Running the MokshaHub reactor", timeout)
        if probe:
            self._probe(timeout)
        return self

    def _probe(self, timeout: float):
        """zmq drops what is sent before the hub's SUB socket has joined: send
        probes until the core logs one (it logs every msg_id it handles)."""
        deadline = time.monotonic() + timeout
        sent: list[str] = []
        while True:
            probe = messages.envelope(PROBE_TOPIC, {"project": "poormanci-probe", "build": 1})
            sent.append(probe["msg_id"])
            self.publish(probe)
            step_end = min(deadline, time.monotonic() + 0.2)
            while time.monotonic() < step_end:
                text = self.log_text(since=self._log_start)
                if any(m in text for m in sent):
                    return
                time.sleep(0.02)
            if not self.alive() or time.monotonic() >= deadline:
                raise AssertionError(
                    f"the hub never logged any of {len(sent)} probe msg_ids (is every handled "
                    f"message logged at DEBUG with its msg_id?)\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def made_request(self, recorded) -> bool:
        """Whether this hub sent ``recorded`` (a stand-in's request, still
        being answered): its process holds the socket of that client port
        (Linux: /proc/net/tcp and the process's fds)."""
        if not self.alive() or recorded.client_port is None:
            return False
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == recorded.client_port:
                    inodes.add(f"socket:[{fields[9]}]")
        try:
            fds = os.listdir(f"/proc/{self.proc.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") in inodes:
                    return True
            except OSError:
                continue
        return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s. Returns the exit code."""
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL: a crash, nothing gets to clean up."""
        if self.alive():
            self.proc.kill()
        return None if self.proc is None else self.proc.wait(10)

    def restart(self, timeout: float = 30.0) -> "Hub":
        """Stop (SIGTERM) and start again: same folder, config and state_dir."""
        self.stop()
        return self.start(timeout)

    def close(self):
        """Stop the hub and its publisher (the Hub cannot be started again)."""
        self.stop()
        if self._ctx is not None:
            self._pub.close()
            self._ctx.term()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- bus ------------------------------------------------------------------
    def publish(self, envelope: dict):
        """Send a fedmsg envelope as the wire has it: [topic, json]."""
        self._pub.send_multipart([envelope["topic"].encode(), json.dumps(envelope).encode()])

    # -- log ------------------------------------------------------------------
    def log_text(self, since: int = 0) -> str:
        """The hub's stdout+stderr (all runs), from byte offset ``since``."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def log_mark(self) -> int:
        """An offset for ``wait_for_log(since=...)``: only what comes after now."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log_text() if self.log_path.exists() else ""
        return f"--- hub log tail ({self.log_path}) ---\n{text[-chars:]}"

    def wait_for_log(self, pattern: str, timeout: float = 15.0, *, since: int | None = None) -> re.Match:
        """Poll the log for ``pattern`` (a regex; from ``since``, default: the
        start of the current run). Raises with the log tail on timeout, or as
        soon as the hub has exited."""
        regex = re.compile(pattern)
        since = self._log_start if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            exited = not self.alive()  # checked first: a line written just before exit still counts
            match = regex.search(self.log_text(since))
            if match:
                return match
            if exited:
                raise AssertionError(f"hub exited ({self.proc and self.proc.returncode}) before "
                                     f"logging /{pattern}/\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"hub did not log /{pattern}/ within {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)


def decided(hub: Hub, envelope: dict, *, nth: int = 1, timeout: float = 15.0) -> str:
    """What the core decided for this message (its nth delivery): the text
    after ``msg <msg_id> <topic>:`` in the log, waited for with a deadline."""
    pattern = re.compile(rf"msg {re.escape(envelope['msg_id'])} \S+: (.*)")
    wait_until(lambda: len(pattern.findall(hub.log_text())) >= nth, timeout,
               f"decision {nth} on {envelope['msg_id']}")
    return pattern.findall(hub.log_text())[nth - 1]
