"""A stand-in Jenkins: remote trigger, queue items, builds, crumbs, basic auth.

Answers as Jenkins does (PROTOCOLS.md section 4, python-jenkins' view of it).
Time is real but nothing runs in the background: a queue item becomes a
build, and a build ends, when a request (or a test helper) looks at it after
its time has come.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from . import Recorded, StandIn

BUS_STATUS = {"SUCCESS": "passed", "FAILURE": "failed", "UNSTABLE": "unstable",
              "ABORTED": "aborted", "NOT_BUILT": "notbuilt"}
RESULTS = set(BUS_STATUS)
# Request fields Jenkins reads itself; the rest are build parameters.
NOT_PARAMS = {"token", "cause", "delay", "json", "Submit"}


@dataclass
class QueueItem:
    id: int
    job: str
    params: dict[str, str]
    causes: list[str]
    addr: str
    queued: float  # time.time()
    start_at: float
    cancelled: bool = False
    build: int | None = None  # number once it left the queue
    forgotten: bool = False


@dataclass
class Build:
    job: str
    number: int
    queue_id: int
    params: dict[str, str]
    causes: list[str]
    addr: str
    started: float
    duration: float
    result: str  # the result it will end with
    stopped_at: float | None = None  # set by /stop

    def ends_at(self) -> float:
        return self.stopped_at if self.stopped_at is not None else self.started + self.duration

    def final_result(self) -> str:
        return "ABORTED" if self.stopped_at is not None else self.result


@dataclass
class Trigger:
    """An accepted buildWithParameters request."""

    job: str
    params: dict[str, str]  # build parameters (no token, no cause)
    cause: str | None
    token: str | None
    queue_id: int
    merged: bool  # coalesced into an item already waiting
    status: int
    time: float
    form: dict[str, str] = field(default_factory=dict)  # the raw form, token included
    query: dict[str, str] = field(default_factory=dict)


def _jetty_error(status: int, message: str, path: str) -> Response:
    """Jenkins' error pages come from Jetty: HTML with the message in the title."""
    body = (
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n"
        f"<title>Error {status} {message}</title>\n</head>\n"
        f"<body><h2>HTTP ERROR {status} {message}</h2>\n<table>\n"
        f"<tr><th>URI:</th><td>{path}</td></tr>\n<tr><th>STATUS:</th><td>{status}</td></tr>\n"
        f"<tr><th>MESSAGE:</th><td>{message}</td></tr>\n<tr><th>SERVLET:</th><td>Stapler</td></tr>\n"
        "</table>\n<hr/><a href=\"https://eclipse.org/jetty\">Powered by Jetty:// 10.0.20</a><hr/>\n"
        "</body>\n</html>\n"
    )
    return Response(body, status=status, mimetype="text/html")


class FakeJenkins(StandIn):
    """Jenkins with the given jobs ``{job_path: trigger_token}``.

    ``job_path`` "a/b" is job b in folder a (URL /job/a/job/b/).

    Knobs, read when they apply (change them between triggers): ``queue_delay``
    (seconds an item waits in the queue), ``build_time`` (seconds a build
    runs), ``slow`` (seconds before answering a trigger), ``results[job]`` (a
    result name, or a callable ``f(params) -> result``), ``default_result``,
    ``next_result(job, *results)`` (queued results used first),
    ``coalesce_status`` (answer to a trigger merged into a waiting item).

    Records: ``requests`` (every request), ``triggers`` (accepted triggers,
    merged ones too, see ``Trigger``).
    """

    name = "jenkins"
    version = "2.479.3"

    def __init__(self, jobs: dict[str, str], *, crumbs: bool = False, user: str | None = None,
                 api_token: str | None = None, queue_delay: float = 0.0, build_time: float = 0.0,
                 slow: float = 0.0, default_result: str = "SUCCESS", seed: int = 0):
        super().__init__(seed=seed)
        self.jobs = dict(jobs)
        self.crumb = secrets.token_hex(16) if crumbs else None
        self.user, self.api_token = user, api_token
        self.queue_delay, self.build_time, self.slow = queue_delay, build_time, slow
        self.default_result = default_result
        self.results: dict[str, str | Callable[[dict], str]] = {}
        self.coalesce_status = 303
        self.triggers: list[Trigger] = []
        self._next_results: dict[str, list[str]] = {}
        self._queue: dict[int, QueueItem] = {}
        self._builds: dict[tuple[str, int], Build] = {}
        self._next_queue_id = 1
        self._next_number = {job: 1 for job in self.jobs}

    # -- test helpers -----------------------------------------------------
    def next_result(self, job: str, *results: str):
        """The next builds of ``job`` end with these results, in order."""
        assert set(results) <= RESULTS, results
        with self._lock:
            self._next_results.setdefault(job, []).extend(results)

    def job_url(self, job: str) -> str:
        return self.url + "".join(f"/job/{part}" for part in job.split("/")) + "/"

    def build_url(self, job: str, number: int) -> str:
        return f"{self.job_url(job)}{number}/"

    def queue_item(self, queue_id: int) -> dict | None:
        """The queue item's API JSON, as GET would return it (None if unknown)."""
        with self._lock:
            self._advance()
            item = self._queue.get(queue_id)
            return None if item is None else self._queue_json(item)

    def builds(self, job: str | None = None) -> list[dict]:
        """Every build (of ``job``) as the build API JSON, oldest first."""
        with self._lock:
            self._advance()
            return [self._build_json(b) for (j, _), b in sorted(self._builds.items())
                    if job is None or j == job]

    def build(self, job: str, number: int) -> dict | None:
        with self._lock:
            self._advance()
            b = self._builds.get((job, number))
            return None if b is None else self._build_json(b)

    def forget_queue_item(self, queue_id: int):
        """Jenkins drops left items after about 5 minutes: GET then gives 404."""
        with self._lock:
            self._queue[queue_id].forgotten = True

    def display_name(self, job: str) -> str:
        """The name the fedmsg plugin sends: a folder job shows as its top folder."""
        return job.split("/")[0]

    def bus_message(self, job_display_name: str, number: int, status: str,
                    *, prefix: str = "org.fedoraproject.prod.jenkins") -> dict:
        """The fedmsg envelope jenkins-fedmsg-emit sends when a build ends."""
        assert status in BUS_STATUS.values() or status == "unknown", status
        return {
            "i": 1,
            "msg": {"build": number, "project": job_display_name, "took": "2.1 sec"},
            "msg_id": f"{datetime.now().year}-{uuid.uuid4()}",
            "timestamp": time.time(),
            "topic": f"{prefix}.build.{status}",
        }

    def bus_message_for(self, job: str, number: int, **kw) -> dict:
        """The bus message for a finished build of this Jenkins."""
        b = self.build(job, number)
        assert b and not b["building"], f"{job} #{number} is not finished: {b}"
        return self.bus_message(self.display_name(job), number, BUS_STATUS[b["result"]], **kw)

    # -- time -------------------------------------------------------------
    def _advance(self):
        """Start the queue items whose time has come (called under the lock)."""
        now = time.time()
        ready = sorted((i for i in self._queue.values()
                        if i.build is None and not i.cancelled and i.start_at <= now),
                       key=lambda i: (i.start_at, i.id))
        for item in ready:
            number = self._next_number[item.job]
            self._next_number[item.job] += 1
            item.build = number
            self._builds[(item.job, number)] = Build(
                job=item.job, number=number, queue_id=item.id, params=item.params,
                causes=item.causes, addr=item.addr, started=item.start_at,
                duration=self.build_time, result=self._pick_result(item.job, item.params))

    def _pick_result(self, job: str, params: dict) -> str:
        queued = self._next_results.get(job)
        if queued:
            return queued.pop(0)
        chosen = self.results.get(job, self.default_result)
        return chosen(params) if callable(chosen) else chosen

    # -- JSON shapes ------------------------------------------------------
    def _actions(self, params: dict, causes: list[str], addr: str) -> list[dict]:
        return [
            {"_class": "hudson.model.ParametersAction",
             "parameters": [{"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
                            for k, v in params.items()]},
            {"_class": "hudson.model.CauseAction",
             "causes": [{"_class": "hudson.model.Cause$RemoteCause",
                         "shortDescription": f"Started by remote host {addr} with note: {note}",
                         "addr": addr, "note": note} for note in causes]},
            {}, {},
        ]

    def _task_json(self, job: str) -> dict:
        return {"_class": "hudson.model.FreeStyleProject", "name": job.split("/")[-1],
                "url": self.job_url(job), "color": "blue"}

    def _queue_json(self, item: QueueItem) -> dict:
        base = {
            "actions": self._actions(item.params, item.causes, item.addr)[:2],
            "blocked": False, "buildable": False, "id": item.id,
            "inQueueSince": int(item.queued * 1000),
            "params": "".join(f"\n{k}={v}" for k, v in item.params.items()),
            "stuck": False, "task": self._task_json(item.job), "url": f"queue/item/{item.id}/",
        }
        if item.cancelled:
            return {"_class": "hudson.model.Queue$LeftItem", **base, "why": None,
                    "cancelled": True, "executable": None}
        if item.build is None:
            left = max(0.0, item.start_at - time.time())
            return {"_class": "hudson.model.Queue$WaitingItem", **base,
                    "why": f"In the quiet period. Expires in {left:.1f} sec",
                    "timestamp": int(item.start_at * 1000)}
        return {"_class": "hudson.model.Queue$LeftItem", **base, "why": None, "cancelled": False,
                "executable": {"_class": "hudson.model.FreeStyleBuild", "number": item.build,
                               "url": self.build_url(item.job, item.build)}}

    def _build_json(self, b: Build) -> dict:
        now = time.time()
        done = now >= b.ends_at()
        name = " » ".join(b.job.split("/"))
        return {
            "_class": "hudson.model.FreeStyleBuild",
            "actions": self._actions(b.params, b.causes, b.addr),
            "building": not done,
            "description": None,
            "displayName": f"#{b.number}",
            "duration": int((b.ends_at() - b.started) * 1000) if done else 0,
            "estimatedDuration": int(b.duration * 1000),
            "fullDisplayName": f"{name} #{b.number}",
            "id": str(b.number),
            "keepLog": False,
            "number": b.number,
            "queueId": b.queue_id,
            "result": b.final_result() if done else None,
            "timestamp": int(b.started * 1000),
            "url": self.build_url(b.job, b.number),
            "builtOn": "",
        }

    # -- HTTP -------------------------------------------------------------
    def error_response(self, status: int) -> Response:
        return _jetty_error(status, "Server Error", "")

    def _authorized(self, request: Request) -> bool | None:
        """True: valid basic auth; None: anonymous; False: bad credentials."""
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return None
        return bool(self.user) and auth.username == self.user and auth.password == self.api_token

    def dispatch(self, request: Request, rec: Recorded) -> Response:
        path = unquote(request.path)
        auth = self._authorized(request)
        if auth is False or (self.user and auth is None):
            resp = _jetty_error(401, "Unauthorized", path)
            resp.headers["WWW-Authenticate"] = 'Basic realm="Jenkins"'
            return resp
        # Jenkins' crumb filter runs before any POST is looked at; API-token auth is exempt.
        if (request.method == "POST" and self.crumb and not auth
                and request.headers.get("Jenkins-Crumb") != self.crumb):
            return _jetty_error(403, "No valid crumb was included in the request", path)
        if request.method == "POST" and path.endswith(("/buildWithParameters", "/build")):
            self._pause(self.slow)  # outside the lock: other requests go on meanwhile
        with self._lock:
            self._advance()
            resp = self._route(request, rec, path, auth)
        resp.headers["X-Jenkins"] = self.version
        return resp

    def _route(self, request: Request, rec: Recorded, path: str, auth: bool | None) -> Response:
        get, post = request.method == "GET", request.method == "POST"
        parts = [p for p in path.split("/") if p]
        if parts == ["crumbIssuer", "api", "json"] and get:
            if not self.crumb:
                return _jetty_error(404, "Not Found", path)
            return _json({"_class": "hudson.security.csrf.DefaultCrumbIssuer",
                          "crumb": self.crumb, "crumbRequestField": "Jenkins-Crumb"})
        if parts == ["api", "json"] and get:
            return _json({"_class": "hudson.model.Hudson", "url": self.url + "/",
                          "jobs": [self._task_json(j) for j in self.jobs]})
        if len(parts) == 5 and parts[:2] == ["queue", "item"] and parts[3:] == ["api", "json"] and get:
            item = self._queue.get(_int(parts[2]))
            if item is None or item.forgotten:
                return _jetty_error(404, "Not Found", path)
            return _json(self._queue_json(item))
        if parts == ["queue", "cancelItem"]:
            return self._cancel(request, path) if post else _jetty_error(405, "Method Not Allowed", path)
        job, rest = _split_job(parts)
        if job is None or job not in self.jobs:
            return _jetty_error(404, "Not Found", path)
        if rest == ["buildWithParameters"] or rest == ["build"]:
            if not post:
                return _jetty_error(405, "This URL requires POST", path)
            return self._trigger(request, rec, job, auth)
        if rest == ["api", "json"] and get:
            return _json(self._job_json(job))
        if len(rest) >= 1 and rest[0].isdigit():
            b = self._builds.get((job, int(rest[0])))
            if b is None:
                return _jetty_error(404, "Not Found", path)
            if rest[1:] == ["api", "json"] and get:
                return _json(self._build_json(b))
            if rest[1:] == ["stop"] and post:
                if time.time() < b.ends_at():
                    b.stopped_at = time.time()
                return Response("", status=302, headers={"Location": self.build_url(job, b.number)})
        return _jetty_error(404, "Not Found", path)

    def _job_json(self, job: str) -> dict:
        numbers = sorted(n for (j, n) in self._builds if j == job)
        last = {"_class": "hudson.model.FreeStyleBuild", "number": numbers[-1],
                "url": self.build_url(job, numbers[-1])} if numbers else None
        return {**self._task_json(job), "fullName": job, "buildable": True,
                "inQueue": any(i.job == job and i.build is None and not i.cancelled
                               for i in self._queue.values()),
                "lastBuild": last, "nextBuildNumber": self._next_number[job]}

    def _trigger(self, request: Request, rec: Recorded, job: str, auth: bool | None) -> Response:
        # Query string and form both count, as in Jenkins (form wins on a clash).
        fields = {**request.args.to_dict(), **request.form.to_dict()}
        token = fields.get("token")
        if token is not None and token != self.jobs[job]:
            return _jetty_error(403, "Invalid token provided.", request.path)
        if token is None and not auth:  # anonymous needs the job's token
            return _jetty_error(403, "Authentication required", request.path)
        params = {k: v for k, v in fields.items() if k not in NOT_PARAMS}
        cause = fields.get("cause")
        waiting = next((i for i in self._queue.values() if i.job == job and i.params == params
                        and i.build is None and not i.cancelled), None)
        if waiting is not None:  # Jenkins coalesces an identical item still waiting
            if cause is not None:
                waiting.causes.append(cause)
            item, status = waiting, self.coalesce_status
        else:
            now = time.time()
            item = QueueItem(id=self._next_queue_id, job=job, params=params,
                             causes=[cause] if cause is not None else [],
                             addr=request.remote_addr or "127.0.0.1", queued=now,
                             start_at=now + self.queue_delay)
            self._next_queue_id += 1
            self._queue[item.id] = item
            status = 201
        self.triggers.append(Trigger(job=job, params=params, cause=cause, token=token,
                                     queue_id=item.id, merged=item is waiting, status=status,
                                     time=rec.time, form=dict(rec.form), query=dict(rec.query)))
        rec.extra["queue_id"] = item.id
        return Response("", status=status, headers={"Location": f"{self.url}/queue/item/{item.id}/"})

    def _cancel(self, request: Request, path: str) -> Response:
        queue_id = _int(request.args.get("id", ""))
        item = self._queue.get(queue_id)
        if item is None or item.forgotten:
            return _jetty_error(404, f"Provided id ({queue_id}) not found", path)
        if item.build is not None or item.cancelled:
            return _jetty_error(422, f"Item for id ({queue_id}) is not cancellable", path)
        item.cancelled = True
        return Response("", status=204)


def _json(data: Any) -> Response:
    return Response(json.dumps(data), status=200, mimetype="application/json")


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _split_job(parts: list[str]) -> tuple[str | None, list[str]]:
    """['job','a','job','b','5','api','json'] -> ('a/b', ['5','api','json'])."""
    names = []
    while len(parts) >= 2 and parts[0] == "job":
        names.append(parts[1])
        parts = parts[2:]
    return ("/".join(names) or None), parts
