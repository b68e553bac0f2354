"""A private RabbitMQ for tests: Debian's rabbitmq-server (apt-get install -y
--no-install-recommends rabbitmq-server) run from scratch folders on 127.0.0.1.
It does not start by itself (no systemd): rabbitmq-server runs in the
background with its node, epmd, HOME, mnesia and log folders pointed into a
scratch folder; ``rabbitmqctl wait --pid PID`` returns once it is ready.

Everything it starts is its own and stopped by ``stop()``: its own epmd (on a
free port, so it neither joins nor leaves behind the machine's shared one),
the node (a distinct name, free AMQP and distribution ports), guest/guest.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from harness import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = SERVER.with_name("rabbitmqctl")


def missing() -> str | None:
    """Why no RabbitMQ can be started here (a skip reason), or None."""
    if not SERVER.exists():
        return f"{SERVER} not found: apt-get install -y --no-install-recommends rabbitmq-server"
    if not shutil.which("epmd"):
        return "epmd (erlang-base) not found"
    return None


class RabbitMQ:
    def __init__(self, workdir: str | Path | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="poormanci-rabbitmq-"))
        self.port = free_port()
        self.name = f"poormanci-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = self.workdir / "rabbitmq.log"
        self.server: subprocess.Popen | None = None
        self.epmd: subprocess.Popen | None = None
        epmd_port = free_port()
        self.env = {
            **os.environ,
            "HOME": str(self.workdir),  # the Erlang cookie the server and rabbitmqctl share
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            # Default: AMQP port + 20000, which may not exist.
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_PID_FILE": str(self.workdir / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),  # none: the defaults
        }
        self._epmd_port = epmd_port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self, timeout: float = 90.0) -> "RabbitMQ":
        (self.workdir / "enabled_plugins").write_text("[].\n")
        self.epmd = subprocess.Popen(["epmd", "-port", str(self._epmd_port), "-address", "127.0.0.1"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        with open(self.log_path, "ab") as log:
            self.server = subprocess.Popen([str(SERVER)], env=self.env, cwd=self.workdir,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        # Returns once the node answers and the broker application runs.
        wait = self.ctl("wait", "--pid", str(self.server.pid), "--timeout", str(int(timeout)),
                        timeout=timeout + 10)
        if wait.returncode != 0 or self.server.poll() is not None:
            output = wait.stdout
            self.stop()
            raise RuntimeError(f"RabbitMQ did not start ({output.strip()})\n{self.log_tail()}")
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([str(CTL), *args], env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)

    def stop(self):
        if self.server is not None and self.server.poll() is None:
            try:
                self.ctl("stop", timeout=60)
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                pass
            if self.server.poll() is None:
                os.killpg(self.server.pid, signal.SIGKILL)  # its own session: only what it started
                self.server.wait(10)
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- rabbitmq log tail ({self.log_path}) ---\n{text[-chars:]}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
