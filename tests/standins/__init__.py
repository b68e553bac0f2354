"""Stand-in HTTP servers for Jenkins and Pagure, on 127.0.0.1.

Each one is a werkzeug WSGI app served by werkzeug's threaded server on a free
port. It keeps a log of every request, can be told to fail or to go down, and
works as a context manager, in pytest and outside it (scripts/demo.py).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = ["StandIn", "Recorded", "FakeJenkins", "FakePagure"]


@dataclass
class Recorded:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    json: Any
    time: float  # time.time() when it arrived
    status: int | None = None  # filled in once answered
    failed: str | None = None  # "500" / "500-after" / "timeout" when made to fail on purpose
    client_port: int | None = None  # the client's TCP port (harness.Hub.made_request: which hub sent it)
    extra: dict[str, Any] = field(default_factory=dict)


class _QuietHandler(WSGIRequestHandler):
    # One request per connection: down() then really cuts every client off
    # (no kept-alive connection lingering on a server that is "down").
    protocol_version = "HTTP/1.0"

    def log_request(self, *args, **kwargs):  # tests read .requests instead
        pass


class StandIn:
    """A threaded HTTP server on 127.0.0.1 with a request log and failure knobs.

    Subclasses implement ``dispatch(request, rec) -> Response``.

    Failure knobs (all requests): ``fail_rate`` (0..1, drawn from a seeded
    RNG), ``fail_mode`` = "500" (answer 500, do nothing), "500-after" (do the
    work, then answer 500: the client cannot know it worked) or "timeout"
    (hold the request ``hang`` seconds, then answer 500); ``fail_next(n,
    mode)`` fails exactly the next n requests. ``down()`` stops listening
    (connections refused) and ``up()`` listens again on the same port.
    """

    name = "standin"

    def __init__(self, *, seed: int = 0):
        self._lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.fail_rate = 0.0
        self.fail_mode = "500"
        self.hang = 30.0
        self._fail_queue: list[str] = []
        self._rng = random.Random(seed)
        self._port = 0
        self._server = None
        self._thread: threading.Thread | None = None
        self._released = threading.Event()  # set when going down: frees held requests

    # -- lifecycle --------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self):
        if self._server is not None:
            return self
        self._released = threading.Event()
        with self._listen() as sock:  # werkzeug dups it
            self._port = sock.getsockname()[1]  # kept: up() comes back on the same port
            server = make_server("127.0.0.1", self._port, self._wsgi, threaded=True,
                                 request_handler=_QuietHandler, fd=sock.fileno())
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{self.name}-{self._port}", daemon=True)
        self._thread.start()
        return self

    def _listen(self) -> socket.socket:
        """Listen on our port (a free one the first time). Bound here, not by
        werkzeug, which exits the process when a bind fails: coming back up,
        the old port can be briefly taken, so retry for a while."""
        deadline = time.monotonic() + 5
        while True:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self._port))
                sock.listen(128)
                return sock
            except OSError:
                sock.close()
                if not self._port or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        server, self._server = self._server, None
        self._released.set()
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)

    down = stop  # an outage: the port refuses connections, the state is kept

    def up(self):
        return self.start()

    def is_up(self) -> bool:
        return self._server is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- failures ---------------------------------------------------------
    def fail_next(self, n: int = 1, mode: str = "500"):
        with self._lock:
            self._fail_queue.extend([mode] * n)

    def _failure(self) -> str | None:
        with self._lock:
            if self._fail_queue:
                return self._fail_queue.pop(0)
            if self.fail_rate and self._rng.random() < self.fail_rate:
                return self.fail_mode
        return None

    def _pause(self, seconds: float):
        """Sleep, but wake up when the server goes down (clean shutdown)."""
        if seconds > 0:
            self._released.wait(seconds)

    # -- request plumbing -------------------------------------------------
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        body_json = request.get_json(silent=True) if request.is_json else None
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=request.args.to_dict(),
            form=request.form.to_dict(),
            headers=dict(request.headers),
            json=body_json,
            time=time.time(),
            client_port=int(environ["REMOTE_PORT"]) if environ.get("REMOTE_PORT") else None,
        )
        with self._lock:
            self.requests.append(rec)
        rec.failed = self._failure()
        if rec.failed == "timeout":
            self._pause(self.hang)
            response = self.error_response(500)
        elif rec.failed == "500":
            response = self.error_response(500)
        else:
            response = self.dispatch(request, rec)
            if rec.failed == "500-after":
                response = self.error_response(500)
        rec.status = response.status_code
        return response(environ, start_response)

    def dispatch(self, request: Request, rec: Recorded) -> Response:
        raise NotImplementedError

    def error_response(self, status: int) -> Response:
        return Response(f"error {status}\n", status=status, mimetype="text/plain")


from .jenkins import FakeJenkins  # noqa: E402  (they subclass StandIn above)
from .pagure import FakePagure  # noqa: E402
