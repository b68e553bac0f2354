"""A private PostgreSQL for tests: Debian's postgresql package (apt-get install
-y --no-install-recommends postgresql) run from a scratch folder on 127.0.0.1.

The package's own cluster is not used (without systemd it does not even
start): only its server binaries, /usr/lib/postgresql/<version>/bin, the
newest version there. ``initdb`` makes a cluster in a scratch folder and
``postgres`` runs it in the foreground as our child (its own session, like
tests/rabbitmq.py), listening on 127.0.0.1 only, on a free port, with its unix
socket in the scratch folder. initdb and postgres refuse to run as root: when
the tests run as root, both run as the ``postgres`` user the package created
(``setpriv``, no PAM and no extra process), and the scratch folder is theirs.

Connections: over the unix socket, ``trust`` (only this process's user and
root can reach the socket folder): that is how databases are made. Over TCP,
what poormanci uses: scram-sha-256 with the role ``poormanci`` and a random
password kept in a 0600 file (``password_file``), never in a DSN.

One server serves a whole pytest session (``shared()``, lazily started,
stopped at exit; tests/conftest.py's ``postgresql`` fixture); each state_dir
gets a database of its own (``database_for``), so tests never see each
other's state.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import free_port, wait_until

ROOT = Path("/usr/lib/postgresql")
ROLE = "poormanci"
SERVER_USER = "postgres"  # made by Debian's postgresql-common; the server runs as it when we are root
INSTALL = "apt-get install -y --no-install-recommends postgresql"


def bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has a server, or None."""
    found = []
    for path in ROOT.glob("*/bin"):
        version = path.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and all((path / b).exists() for b in ("initdb", "postgres", "psql")):
            found.append((tuple(int(p) for p in version.split(".")), path))
    return max(found)[1] if found else None


def missing() -> str | None:
    """Why no PostgreSQL can be started here (a skip reason), or None."""
    if bin_dir() is None:
        return f"no PostgreSQL server in {ROOT}/<version>/bin (initdb, postgres, psql): {INSTALL}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (f"running as root, and PostgreSQL refuses root: no user {SERVER_USER!r} to run it as "
                    f"(Debian's postgresql package creates it: {INSTALL})")
        if shutil.which("setpriv") is None:
            return "running as root, and setpriv (util-linux) is not there to run PostgreSQL as another user"
    return None


def database_for(state_dir) -> str:
    """The database of a state_dir: the same folder always gets the same
    database (a hub restarted with a new config keeps its state), a new folder
    a new one."""
    digest = hashlib.sha256(str(Path(state_dir).absolute()).encode()).hexdigest()[:16]
    return f"state_{digest}"


class PostgreSQL:
    def __init__(self):
        self.bin = bin_dir()
        if self.bin is None:
            raise RuntimeError(missing())
        # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, the server's user could not reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="poormanci-postgresql-"))
        self.data = self.workdir / "data"
        self.socket_dir = self.workdir / "socket"
        self.log_path = self.workdir / "postgresql.log"
        self.password_file = self.workdir / "password"
        self.port = free_port()
        self.server: subprocess.Popen | None = None
        self._as_server_user: list[str] = []
        self._lock = threading.Lock()
        self._databases: set[str] = set()

    # -- life -----------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "PostgreSQL":
        self.socket_dir.mkdir()
        self.log_path.touch()
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            for path in (self.workdir, self.socket_dir, self.log_path):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as_server_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                                    "--init-groups", "--"]
        initdb = subprocess.run(
            [*self._as_server_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
            cwd=self.workdir)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}")
        # Our own rules replace initdb's: the socket (reachable by us only) trusted, TCP by password.
        hba = self.data / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        if self._as_server_user:
            os.chown(hba, pwd.getpwnam(SERVER_USER).pw_uid, pwd.getpwnam(SERVER_USER).pw_gid)
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.socket_dir),
            "password_encryption": "scram-sha-256", "max_connections": "200",
            # A scratch cluster: durability across a crash of the machine is not what tests check.
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "logging_collector": "off", "log_min_messages": "warning",
        }
        args = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        with open(self.log_path, "ab") as log:
            self.server = subprocess.Popen([*self._as_server_user, str(self.bin / "postgres"), "-D", str(self.data),
                                            *args], cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: self.server.poll() is not None or self._ready(), timeout, "PostgreSQL to accept "
                       "connections", interval=0.1)
            if self.server.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.server.returncode})")
            password = secrets.token_urlsafe(24)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            self.psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
        except BaseException as e:
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {e}\n{self.log_tail()}") from e
        return self

    def _ready(self) -> bool:
        return subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port)],
                              stdin=subprocess.DEVNULL, timeout=10).returncode == 0

    def alive(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def stop(self):
        """Fast shutdown (SIGINT: clients are disconnected), SIGKILL if it
        hangs; then the scratch folder goes."""
        if self.alive():
            self.server.send_signal(signal.SIGINT)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)  # its own session: only what it started
                self.server.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- use ------------------------------------------------------------------
    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the unix socket; its output
        (unaligned, tuples only). Raises with psql's message on error."""
        r = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
                            "-c", sql], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def database(self, name: str) -> str:
        """Create the database ``name``, owned by the poormanci role, unless
        it exists; returns its name."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with self._lock:
            if name not in self._databases:
                if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip():
                    self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
                self._databases.add(name)
        return name

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user={ROLE}"

    def store_config(self, database: str, lease: float | None = None) -> dict:
        """The ``poormanci.store`` section for ``database`` (created if need
        be); ``lease`` in seconds, None for poormanci's default."""
        store = {"backend": "postgresql", "dsn": self.dsn(self.database(database)),
                 "password_file": str(self.password_file)}
        if lease is not None:
            store["lease"] = lease
        return store

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- postgresql log tail ({self.log_path}) ---\n{text[-chars:]}"


# -- one server per process (a pytest session, a bench/ script) -------------------

_shared: PostgreSQL | None = None
_shared_lock = threading.Lock()


def shared() -> PostgreSQL:
    """The process's PostgreSQL, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive():
            reason = missing()
            if reason:
                raise RuntimeError(reason)
            server = PostgreSQL()
            server.start()
            atexit.register(server.stop)
            _shared = server
        return _shared


def stop_shared():
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


if __name__ == "__main__":
    # `python tests/postgres.py missing`: the reason on stdout and exit status 1
    # when no server can be started here (the Makefile's PostgreSQL pass).
    if sys.argv[1:] == ["missing"]:
        reason = missing()
        print(reason or "PostgreSQL found")
        sys.exit(1 if reason else 0)
    # `python tests/postgres.py`: start one and wait (a database to poke at by hand).
    with PostgreSQL() as server:
        print(f"dsn: {server.dsn(server.database('poormanci'))}\npassword_file: {server.password_file}\n"
              f"psql: {server.bin / 'psql'} -h {server.socket_dir} -p {server.port} -U postgres", flush=True)
        try:
            while server.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
