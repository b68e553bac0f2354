"""A stand-in Jenkins: remote trigger, queue items, builds, crumbs, security.

It answers as Jenkins 2.4xx does, unkind parts included. Each behaviour names
the file of Jenkins' own source it follows (repository jenkinsci/jenkins,
under core/src/main/java/ unless said otherwise; the build-token-root plugin
is jenkinsci/build-token-root-plugin). In short:

- a build's ``result`` is set while ``building`` is still true, and
  post-build steps may make it worse before ``building`` turns false;
- a queue item that left the queue is forgotten after ``left_ttl`` seconds
  (see FORGET_LEFT_ITEMS), and all of them at once on ``restart()``; every
  build has ``queueId``;
- undefined parameters are dropped, defined ones not sent take their defaults;
- disabled (409), parameterless (400, or 500 on older Jenkins) and unknown (404) jobs;
- 403 pages as Jenkins renders them, with the layout's ``data-crumb-header``;
- the ``/buildByToken/`` route of the build-token-root plugin.

Time is real but nothing runs in the background: a queue item becomes a
build, and a build ends, when a request (or a test helper) looks at it after
its time has come.
"""

from __future__ import annotations

import collections
import html
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote, unquote

from werkzeug.wrappers import Request, Response

import messages

from . import Recorded, StandIn

BUS_STATUS = {"SUCCESS": "passed", "FAILURE": "failed", "UNSTABLE": "unstable",
              "ABORTED": "aborted", "NOT_BUILT": "notbuilt"}
RESULTS = set(BUS_STATUS)
# Request fields Jenkins reads itself (ParameterizedJobMixIn.getBuildCause, the
# `delay` query parameter, BuildAuthorizationToken): never build parameters.
NOT_PARAMS = {"token", "cause", "delay", "json", "Submit", "job"}
# The string parameters of the job poormanci's JJB template defines (REPO,
# BRANCH, BRANCH_TO) and COMMIT. Not `cause`: Jenkins reads it as the remote
# cause's note, and as a parameter it would make every run's queue item
# differ, so identical triggers would never merge.
DEFAULT_PARAMS = {"REPO": "", "BRANCH": "", "BRANCH_TO": "master", "COMMIT": ""}
# Permission: (id, title), as hudson/security/AccessDeniedException3.java reports them.
PERMISSIONS = {"read": ("hudson.model.Hudson.Read", "Overall/Read"),
               "build": ("hudson.model.Item.Build", "Job/Build"),
               "cancel": ("hudson.model.Item.Cancel", "Job/Cancel")}
# hudson/model/Queue.java keeps left items in a cache that expires after 5
# minutes; here a few seconds, so tests can see it happen.
LEFT_TTL = 5.0
# Left items are forgotten after left_ttl, as in Jenkins; the core finds a
# build whose item is gone by its queueId. Off only for a test that wants it.
FORGET_LEFT_ITEMS = True
# hudson/model/Run.java: seconds a build shows its result while still building.
RESULT_WINDOW = 0.3


@dataclass
class JobConfig:
    """How a job is configured in Jenkins.

    ``token``: "Trigger builds remotely" token (None: none set). ``params``:
    parameter definitions {name: default}, None for a job without parameters.
    ``disabled``: not buildable. ``post_build``: the result post-build steps
    leave, a name or ``f(parameters) -> name | None`` (None: the build's own).
    """

    token: str | None
    params: dict[str, str] | None = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    disabled: bool = False
    post_build: str | Callable[[dict], str | None] | None = None


@dataclass
class QueueItem:
    id: int
    job: str
    params: dict[str, str]  # what the build will get: defined parameters, defaults filled in
    causes: list[dict]  # Cause JSON, merged triggers add theirs
    queued: float  # time.time()
    start_at: float
    cancelled: bool = False
    build: int | None = None  # number once it left the queue
    left_at: float | None = None  # when it left (started or cancelled)
    forgotten: bool = False

    def notes(self) -> list[str | None]:
        return [c.get("note") for c in self.causes]


@dataclass
class Build:
    job: str
    number: int
    queue_id: int
    params: dict[str, str]
    causes: list[dict]
    started: float
    duration: float
    result: str  # the result the build steps set
    post_result: str | None  # what post-build steps turn it into (None: unchanged)
    window: float  # seconds the result shows while still building
    stopped_at: float | None = None  # set by /stop

    def result_at(self) -> float:
        return self.stopped_at if self.stopped_at is not None else self.started + self.duration

    def ends_at(self) -> float:
        return self.result_at() + self.window

    def shown_result(self, now: float) -> str | None:
        if now < self.result_at():
            return None
        if self.stopped_at is not None:
            return "ABORTED"
        return self.post_result if now >= self.ends_at() and self.post_result else self.result

    def final_result(self) -> str:
        if self.stopped_at is not None:
            return "ABORTED"
        return self.post_result or self.result


@dataclass
class Trigger:
    """An accepted buildWithParameters request."""

    job: str
    params: dict[str, str]  # build parameters as sent (no token, no cause)
    cause: str | None
    token: str | None
    queue_id: int
    merged: bool  # coalesced into an item already waiting
    status: int
    time: float
    form: dict[str, str] = field(default_factory=dict)  # the raw form, token included
    query: dict[str, str] = field(default_factory=dict)
    route: str = "job"  # "job" (/job/…/buildWithParameters) or "buildByToken"


def _jetty_error(status: int, message: str, path: str) -> Response:
    """Errors sent with sendError (HttpResponses.error, the crumb filter) are
    Jetty's page: HTML with the message in the title."""
    message = html.escape(message)
    body = (
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n"
        f"<title>Error {status} {message}</title>\n</head>\n"
        f"<body><h2>HTTP ERROR {status} {message}</h2>\n<table>\n"
        f"<tr><th>URI:</th><td>{html.escape(path)}</td></tr>\n<tr><th>STATUS:</th><td>{status}</td></tr>\n"
        f"<tr><th>MESSAGE:</th><td>{message}</td></tr>\n<tr><th>SERVLET:</th><td>Stapler</td></tr>\n"
        "</table>\n<hr/><a href=\"https://eclipse.org/jetty\">Powered by Jetty:// 12.0.16</a><hr/>\n"
        "</body>\n</html>\n"
    )
    return Response(body, status=status, mimetype="text/html")


class FakeJenkins(StandIn):
    """Jenkins with the given jobs ``{job_path: trigger_token}`` (a token of
    None: the job has none). ``job_path`` "a/b" is job b in folder a (URL
    /job/a/job/b/). ``set_job(job, ...)`` changes a job's ``JobConfig``.

    Knobs, read when they apply (change them between triggers): ``queue_delay``
    (seconds an item waits in the queue), ``build_time`` (seconds a build
    runs), ``result_window`` (seconds its result shows while ``building`` is
    still true; 0: none), ``left_ttl`` (seconds a left queue item is kept;
    None: for ever), ``slow`` (seconds before answering a trigger),
    ``results[job]`` (a result name, or ``f(params) -> result``),
    ``default_result``, ``next_result(job, *results)`` and
    ``next_post_build(job, *results)`` (used first, one per build),
    ``coalesce_status`` (answer to a trigger merged into a waiting item: 303
    since Jenkins 2.308, 201 before), ``not_parameterized_status`` (400; 500
    is older Jenkins' IllegalStateException page), ``anonymous_perms`` and
    ``user_perms`` (subsets of "read", "build", "cancel").

    Records: ``requests`` (every request; ``request_counts()``), ``triggers``
    (accepted triggers, merged ones too, see ``Trigger``).
    """

    name = "jenkins"
    version = "2.479.3"

    def __init__(self, jobs: dict[str, str | None], *, crumbs: bool = False, user: str | None = None,
                 api_token: str | None = None, queue_delay: float = 0.0, build_time: float = 0.0,
                 slow: float = 0.0, default_result: str = "SUCCESS", result_window: float = RESULT_WINDOW,
                 left_ttl: float | None = LEFT_TTL if FORGET_LEFT_ITEMS else None, anonymous_perms=None,
                 seed: int = 0):
        super().__init__(seed=seed)
        self.job_configs = {job: JobConfig(token=token) for job, token in jobs.items()}
        self.crumb = secrets.token_hex(16) if crumbs else None
        self.user, self.api_token = user, api_token
        self.queue_delay, self.build_time, self.slow = queue_delay, build_time, slow
        self.result_window, self.left_ttl = result_window, left_ttl
        self.default_result = default_result
        self.results: dict[str, str | Callable[[dict], str]] = {}
        self.coalesce_status = 303
        self.not_parameterized_status = 400
        # A Jenkins with users usually gives anonymous nothing; without, the
        # tests' anonymous client may read and cancel (never build without the token).
        if anonymous_perms is None:
            anonymous_perms = set() if user else {"read", "cancel"}
        self.anonymous_perms = set(anonymous_perms)
        self.user_perms = {"read", "build", "cancel"}
        self.triggers: list[Trigger] = []
        self._next_results: dict[str, list[str]] = {}
        self._next_post_build: dict[str, list[str]] = {}
        self._queue: dict[int, QueueItem] = {}
        self._builds: dict[tuple[str, int], Build] = {}
        self._next_queue_id = 1
        self._next_number = {job: 1 for job in jobs}

    @property
    def jobs(self) -> dict[str, str | None]:
        """{job: token}."""
        return {job: c.token for job, c in self.job_configs.items()}

    # -- test helpers -----------------------------------------------------
    def set_job(self, job: str, **changes) -> JobConfig:
        """Add or change a job: ``token``, ``params`` ({name: default} or
        None), ``disabled``, ``post_build`` (see ``JobConfig``)."""
        with self._lock:
            config = self.job_configs.setdefault(job, JobConfig(token=None))
            self._next_number.setdefault(job, 1)
            for key, value in changes.items():
                assert hasattr(config, key), key
                setattr(config, key, dict(value) if key == "params" and value is not None else value)
            return config

    def next_result(self, job: str, *results: str):
        """The next builds of ``job`` end their build steps with these results, in order."""
        assert set(results) <= RESULTS, results
        with self._lock:
            self._next_results.setdefault(job, []).extend(results)

    def next_post_build(self, job: str, *results: str):
        """The next builds of ``job``: post-build steps turn their result into
        these, in order (a per-build ``JobConfig.post_build``)."""
        assert set(results) <= RESULTS, results
        with self._lock:
            self._next_post_build.setdefault(job, []).extend(results)

    def rotate_crumb(self) -> str:
        """A new crumb (a new session): the old one is now stale."""
        assert self.crumb, "crumbs are off"
        with self._lock:
            self.crumb = secrets.token_hex(16)
            return self.crumb

    def job_url(self, job: str) -> str:
        return self.url + "".join(f"/job/{part}" for part in job.split("/")) + "/"

    def build_url(self, job: str, number: int) -> str:
        return f"{self.job_url(job)}{number}/"

    def queue_item(self, queue_id: int) -> dict | None:
        """The queue item's API JSON, as GET would return it (None if unknown or forgotten)."""
        with self._lock:
            self._advance()
            item = self._queue.get(queue_id)
            return None if item is None or item.forgotten else self._queue_json(item)

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
        """Forget this left item now (as ``left_ttl`` would): GET then gives 404."""
        with self._lock:
            self._queue[queue_id].forgotten = True

    def delete_build(self, job: str, number: int):
        """Delete a build, as "Discard old builds" does (hudson/tasks/LogRotator.java)."""
        with self._lock:
            del self._builds[(job, number)]

    def restart(self):
        """A Jenkins restart: down, then up on the same port. Left items live in
        memory only (hudson/model/Queue.java: save() skips them): all forgotten.
        Waiting items and builds are on disk and stay."""
        self.down()
        with self._lock:
            self._advance()
            for item in self._queue.values():
                if item.left_at is not None:
                    item.forgotten = True
        self.up()

    def request_counts(self, job: str | None = None) -> collections.Counter:
        """Requests so far per (method, kind), kind one of "root", "crumb",
        "queue", "queue_item", "cancel", "job", "trigger", "build_by_token",
        "build", "stop", "other"; with ``job``, only those about that job."""
        with self._lock:
            return collections.Counter(
                (r.method, r.extra.get("kind", "other")) for r in self.requests
                if job is None or r.extra.get("job") == job)

    def display_name(self, job: str) -> str:
        """The name the fedmsg plugin sends: a folder job shows as its top folder."""
        return job.split("/")[0]

    def bus_message(self, job_display_name: str, number: int, status: str,
                    *, prefix: str = "org.fedoraproject.prod.jenkins") -> dict:
        """The fedmsg envelope jenkins-fedmsg-emit sends when a build ends."""
        assert status in BUS_STATUS.values() or status == "unknown", status
        return messages.envelope(f"{prefix}.build.{status}",
                                 {"build": number, "project": job_display_name, "took": "2.1 sec"})

    def bus_message_for(self, job: str, number: int, **kw) -> dict:
        """The bus message for a finished build of this Jenkins."""
        b = self.build(job, number)
        assert b and not b["building"], f"{job} #{number} is not finished: {b}"
        return self.bus_message(self.display_name(job), number, BUS_STATUS[b["result"]], **kw)

    # -- time -------------------------------------------------------------
    def _advance(self):
        """Start the queue items whose time has come, forget left items past
        ``left_ttl`` (called under the lock)."""
        now = time.time()
        ready = sorted((i for i in self._queue.values()
                        if i.build is None and not i.cancelled and i.start_at <= now),
                       key=lambda i: (i.start_at, i.id))
        for item in ready:
            number = self._next_number[item.job]
            self._next_number[item.job] += 1
            item.build, item.left_at = number, item.start_at
            result = _pop(self._next_results, item.job) or self._result_for(item)
            post = _pop(self._next_post_build, item.job)
            if post is None:
                chosen = self.job_configs[item.job].post_build
                post = chosen(item.params) if callable(chosen) else chosen
            self._builds[(item.job, number)] = Build(
                job=item.job, number=number, queue_id=item.id, params=item.params,
                causes=item.causes, started=item.start_at, duration=self.build_time,
                result=result, post_result=post, window=self.result_window)
        if self.left_ttl is not None:
            for item in self._queue.values():
                if item.left_at is not None and now - item.left_at > self.left_ttl:
                    item.forgotten = True

    def _result_for(self, item: QueueItem) -> str:
        chosen = self.results.get(item.job, self.default_result)
        return chosen(item.params) if callable(chosen) else chosen

    # -- JSON shapes ------------------------------------------------------
    def _actions(self, params: dict, causes: list[dict]) -> list[dict]:
        return [
            {"_class": "hudson.model.ParametersAction",
             "parameters": [{"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
                            for k, v in params.items()]},
            {"_class": "hudson.model.CauseAction", "causes": [dict(c) for c in causes]},
            {}, {},
        ]

    def _task_json(self, job: str) -> dict:
        config = self.job_configs[job]
        return {"_class": "hudson.model.FreeStyleProject", "name": job.split("/")[-1],
                "url": self.job_url(job), "color": "disabled" if config.disabled else "blue"}

    def _queue_json(self, item: QueueItem) -> dict:
        base = {
            "actions": self._actions(item.params, item.causes)[:2],
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
        building = now < b.ends_at()
        name = " » ".join(b.job.split("/"))
        return {
            "_class": "hudson.model.FreeStyleBuild",
            "actions": self._actions(b.params, b.causes),
            "building": building,
            "description": None,
            "displayName": f"#{b.number}",
            "duration": 0 if building else int((b.ends_at() - b.started) * 1000),
            "estimatedDuration": int(b.duration * 1000),
            "fullDisplayName": f"{name} #{b.number}",
            "id": str(b.number),
            "keepLog": False,
            "number": b.number,
            # hudson/model/Run.java getQueueId: every build knows the item it came from.
            "queueId": b.queue_id,
            # hudson/model/Run.java: setResult() may run while the build is
            # still building (isBuilding() is true until post-production);
            # post-build steps can still make it worse. Final only once
            # building is false.
            "result": b.shown_result(now),
            "timestamp": int(b.started * 1000),
            "url": self.build_url(b.job, b.number),
            "builtOn": "",
        }

    def _job_json(self, job: str) -> dict:
        config = self.job_configs[job]
        # hudson/model/Job.java exports `builds` newest first (at most 100 without a range).
        numbers = sorted((n for (j, n) in self._builds if j == job), reverse=True)
        builds = [self._build_json(self._builds[(job, n)]) for n in numbers]
        return {**self._task_json(job), "fullName": job,
                "buildable": not config.disabled,
                "builds": builds,
                "inQueue": any(i.job == job and i.build is None and not i.cancelled
                               for i in self._queue.values()),
                "lastBuild": builds[0] if builds else None,
                "nextBuildNumber": self._next_number[job],
                "property": [{"_class": "hudson.model.ParametersDefinitionProperty",
                              "parameterDefinitions": [
                                  {"_class": "hudson.model.StringParameterDefinition", "name": k,
                                   "defaultParameterValue": {"name": k, "value": v}}
                                  for k, v in config.params.items()]}] if config.params is not None else []}

    # -- HTTP -------------------------------------------------------------
    def error_response(self, status: int) -> Response:
        return _jetty_error(status, "Server Error", "")

    def _authorized(self, request: Request) -> bool | None:
        """True: valid basic auth; None: anonymous; False: bad credentials."""
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return None
        return bool(self.user) and auth.username == self.user and auth.password == self.api_token

    def _perms(self, auth: bool | None) -> set[str]:
        return self.user_perms if auth else self.anonymous_perms

    def dispatch(self, request: Request, rec: Recorded) -> Response:
        path = unquote(request.path)
        parts = [p for p in path.split("/") if p]
        rec.extra.update(_kind(parts, request))
        auth = self._authorized(request)
        if auth is False:
            # jenkins/security/BasicHeaderProcessor.java: a wrong API token is a 401.
            resp = _jetty_error(401, f"Invalid password/token for user: {request.authorization.username}", path)
            resp.headers["WWW-Authenticate"] = 'Basic realm="Jenkins"'
            return resp
        # hudson/security/csrf/CrumbFilter.java runs before any POST is looked
        # at; requests authenticated with an API token are exempt, and so is
        # /buildByToken/ (the plugin's CrumbExclusion).
        if (request.method == "POST" and self.crumb and not auth and parts[:1] != ["buildByToken"]
                and request.headers.get("Jenkins-Crumb") != self.crumb):
            return _jetty_error(403, "No valid crumb was included in the request", path)
        # jenkins/model/Jenkins.java getTarget(): everything but a few paths
        # needs Overall/Read, whatever job token the request carries.
        # /buildByToken/ is an UnprotectedRootAction.
        if parts[:1] != ["buildByToken"] and "read" not in self._perms(auth):
            return self._denied(request, auth, "read")
        if request.method == "POST" and rec.extra["kind"] in ("trigger", "build_by_token"):
            self._pause(self.slow)  # outside the lock: other requests go on meanwhile
        with self._lock:
            self._advance()
            resp = self._route(request, rec, path, parts, auth)
        resp.headers["X-Jenkins"] = self.version
        return resp

    def _denied(self, request: Request, auth: bool | None, perm: str | None,
                message: str | None = None) -> Response:
        """A 403 as Jenkins renders it: anonymous gets the short "Authentication
        required" page (hudson/security/HudsonAuthenticationEntryPoint.java,
        hudson/Util.java printRedirect), with the missing permission when it is
        one; an authenticated user the full layout page of accessDenied.jelly
        (hudson/security/AccessDeniedHandlerImpl.java), whose <head> carries
        data-crumb-header like every page (lib/layout/layout.jelly)."""
        headers = {"X-Jenkins": self.version}
        who = self.user if auth else "anonymous"
        if perm is not None:  # an AccessDeniedException3 reports itself as headers
            perm_id, title = PERMISSIONS[perm]
            headers.update({"X-You-Are-Authenticated-As": who,
                            "X-You-Are-In-Group-Disabled": "JENKINS-39402: use -Dhudson.security."
                            "AccessDeniedException2.REPORT_GROUP_HEADERS=true or use /whoAmI to diagnose",
                            "X-Required-Permission": perm_id,
                            "X-Permission-Implied-By": "hudson.model.Hudson.Administer"})
            message = f"{who} is missing the {title} permission"
        if not auth:
            target = request.full_path.rstrip("?")
            login = html.escape(f"/login?from={quote(target, safe='')}", quote=True)
            body = (f"<html><head><meta http-equiv='refresh' content='1;url={login}'/>"
                    f"<script id='redirect' data-redirect-url='{login}' "
                    "src='/static/5a6e1c0b/scripts/redirect.js'></script></head>"
                    "<body style='background-color:white; color:white;'>\n"
                    "Authentication required\n<!--\n")
            if perm is not None:
                perm_id = PERMISSIONS[perm][0]
                body += (f"You are authenticated as: anonymous\nGroups that you are in:\n  \n"
                         f"Permission you need to have (but didn't): {perm_id}\n"
                         " ... which is implied by: hudson.model.Hudson.Administer\n")
            body += "-->\n\n</body></html>" + " " * 300
            return Response(body, status=403, headers=headers, mimetype="text/html")
        return Response(_layout_page("Access Denied [Jenkins]", self.crumb,
                                     f"<h1>Access Denied</h1>\n<p class=\"error\">{html.escape(message)}</p>"),
                        status=403, headers=headers, mimetype="text/html")

    def _route(self, request: Request, rec: Recorded, path: str, parts: list[str],
               auth: bool | None) -> Response:
        get, post = request.method == "GET", request.method == "POST"
        if parts == ["crumbIssuer", "api", "json"] and get:
            if not self.crumb:
                return _jetty_error(404, "Not Found", path)
            return self._answer(request, {"_class": "hudson.security.csrf.DefaultCrumbIssuer",
                                          "crumb": self.crumb, "crumbRequestField": "Jenkins-Crumb"})
        if parts == ["api", "json"] and get:
            return self._answer(request, {"_class": "hudson.model.Hudson", "url": self.url + "/",
                                          "jobs": [self._task_json(j) for j in self.job_configs]})
        if parts == ["queue", "api", "json"] and get:
            waiting = [self._queue_json(i) for i in self._queue.values()
                       if i.build is None and not i.cancelled]
            return self._answer(request, {"_class": "hudson.model.Queue", "discoverableItems": [],
                                          "items": waiting})
        if len(parts) == 5 and parts[:2] == ["queue", "item"] and parts[3:] == ["api", "json"] and get:
            item = self._queue.get(_int(parts[2]))
            if item is None or item.forgotten:
                return _jetty_error(404, "Not Found", path)
            return self._answer(request, self._queue_json(item))
        if parts == ["queue", "cancelItem"]:
            return self._cancel(request, path, auth) if post else _jetty_error(405, "Method Not Allowed", path)
        if parts[:1] == ["buildByToken"]:
            if parts[1:] != ["buildWithParameters"]:
                return _jetty_error(404, "Not Found", path)
            return self._build_by_token(request, rec, path, auth)
        job, rest = _split_job(parts)
        if job is None or job not in self.job_configs:
            return _jetty_error(404, "Not Found", path)
        if rest == ["buildWithParameters"] or rest == ["build"]:
            if not post:
                return _jetty_error(405, "This URL requires POST", path)
            return self._trigger(request, rec, path, job, auth)
        if rest == ["api", "json"] and get:
            return self._answer(request, self._job_json(job), default=_job_default)
        if len(rest) >= 1 and rest[0].isdigit():
            b = self._builds.get((job, int(rest[0])))
            if b is None:
                return _jetty_error(404, "Not Found", path)
            if rest[1:] == ["api", "json"] and get:
                return self._answer(request, self._build_json(b))
            if rest[1:] == ["stop"] and post:
                if time.time() < b.result_at():
                    b.stopped_at = time.time()
                return Response("", status=302, headers={"Location": self.build_url(job, b.number)})
        return _jetty_error(404, "Not Found", path)

    def _answer(self, request: Request, data: dict, default: Callable[[dict], dict] | None = None) -> Response:
        """JSON, cut down to ``tree=`` as Jenkins' remote API does
        (org.kohsuke.stapler.export.TreePruner in Stapler); without a tree the
        default depth-0 view."""
        tree = request.args.get("tree")
        if tree:
            data = prune(data, parse_tree(tree))
        elif default is not None:
            data = default(data)
        return Response(json.dumps(data), status=200, mimetype="application/json")

    def _trigger(self, request: Request, rec: Recorded, path: str, job: str, auth: bool | None) -> Response:
        """/job/<job>/buildWithParameters (jenkins/model/ParameterizedJobMixIn.java
        doBuildWithParameters): token or Job/Build first, then disabled (409),
        then not parameterized (400; 500 on older Jenkins)."""
        config = self.job_configs[job]
        # Query string and form both count (req.getParameter).
        fields = {**request.args.to_dict(), **request.form.to_dict()}
        denied = self._check_token(request, config, fields, auth)
        if denied is not None:
            return denied
        if config.disabled:
            return _jetty_error(409, f"{job} is not buildable", path)
        if config.params is None:
            if self.not_parameterized_status == 500:
                return _oops_page(self.crumb, "java.lang.IllegalStateException: This build is not parameterized!")
            return _jetty_error(400, f"{job} is not parameterized", path)
        # ParameterizedJobMixIn.getBuildCause: a remote cause (with its note)
        # only for a request that carries the job's token; else the user's.
        if config.token is not None and fields.get("token") is not None:
            cause = _remote_cause(request, fields.get("cause"))
        else:
            cause = _user_cause(self.user if auth else None)
        item, created = self._schedule(job, fields, cause)
        status = 201 if created else self.coalesce_status
        self._record(rec, job, fields, item, status, merged=not created, route="job")
        # Stapler's sendRedirect makes the Location absolute.
        return Response("", status=status, headers={"Location": f"{self.url}/queue/item/{item.id}/"})

    def _build_by_token(self, request: Request, rec: Recorded, path: str, auth: bool | None) -> Response:
        """The build-token-root plugin (BuildRootAction.java): no Overall/Read,
        no crumb; 404 for an unknown job and for a job without a token (not
        to reveal it), 400 when disabled or without parameters; always a
        remote cause; 201 with a RELATIVE Location, 303 when merged."""
        fields = {**request.args.to_dict(), **request.form.to_dict()}
        job = fields.get("job") or ""
        rec.extra["job"] = job
        config = self.job_configs.get(job)
        if config is None or config.token is None:
            return _jetty_error(404, "Not Found", path)
        denied = self._check_token(request, config, fields, auth)
        if denied is not None:
            return denied
        if config.disabled:
            return _jetty_error(400, f"{job} is not buildable", path)
        if config.params is None:
            return _jetty_error(400, "Use /buildByToken/build for this job since it takes no parameters", path)
        item, created = self._schedule(job, fields, _remote_cause(request, fields.get("cause")))
        self._record(rec, job, fields, item, 201 if created else 303, merged=not created, route="buildByToken")
        if not created:  # sendRedirect: absolute
            return Response("", status=303, headers={"Location": f"{self.url}/queue/item/{item.id}/"})
        resp = Response("Scheduled.\n", status=201, mimetype="text/html")
        resp.headers["Location"] = f"/queue/item/{item.id}/"  # addHeader: as is, relative
        resp.autocorrect_location_header = False
        return resp

    def _check_token(self, request: Request, config: JobConfig, fields: dict, auth: bool | None):
        """hudson/model/BuildAuthorizationToken.java checkPermission: the right
        token passes; a wrong one is an AccessDeniedException ("Invalid token
        provided."); no token (or a job without one) needs Job/Build."""
        token = fields.get("token")
        if config.token is not None and token is not None:
            if secrets.compare_digest(token.encode(), config.token.encode()):
                return None
            # A plain AccessDeniedException: anonymous sees only "Authentication required".
            return self._denied(request, auth, None, "Invalid token provided.")
        if "build" not in self._perms(auth):
            return self._denied(request, auth, "build")
        return None

    def _schedule(self, job: str, fields: dict, cause: dict) -> tuple[QueueItem, bool]:
        """hudson/model/ParametersDefinitionProperty.java buildWithParameters:
        only defined parameters are taken (SimpleParameterDefinition.createValue
        reads each from the request), the others are dropped silently; a
        defined one not sent takes its default. hudson/model/Queue.java
        schedule2: an identical waiting item (same parameters) absorbs the
        trigger and keeps both causes (CauseAction.foldIntoExisting)."""
        defined = self.job_configs[job].params or {}
        params = {name: fields.get(name, default) for name, default in defined.items()}
        waiting = next((i for i in self._queue.values() if i.job == job and i.params == params
                        and i.build is None and not i.cancelled), None)
        if waiting is not None:
            waiting.causes.append(cause)
            return waiting, False
        now = time.time()
        item = QueueItem(id=self._next_queue_id, job=job, params=params, causes=[cause],
                         queued=now, start_at=now + self.queue_delay)
        self._next_queue_id += 1
        self._queue[item.id] = item
        return item, True

    def _record(self, rec: Recorded, job: str, fields: dict, item: QueueItem, status: int, *,
                merged: bool, route: str):
        sent = {k: v for k, v in fields.items() if k not in NOT_PARAMS}
        self.triggers.append(Trigger(job=job, params=sent, cause=fields.get("cause"), token=fields.get("token"),
                                     queue_id=item.id, merged=merged, status=status, time=rec.time,
                                     form=dict(rec.form), query=dict(rec.query), route=route))
        rec.extra["queue_id"] = item.id

    def _cancel(self, request: Request, path: str, auth: bool | None) -> Response:
        """hudson/model/Queue.java doCancelItem: 204 for a waiting item; an item
        that already left (started, cancelled) cannot be cancelled: 500 "Could
        not cancel run"; 422 without Job/Cancel; 404 when unknown or forgotten."""
        queue_id = _int(request.args.get("id", ""))
        item = self._queue.get(queue_id)
        if item is None or item.forgotten:
            return _jetty_error(404, f"Provided id ({queue_id}) not found", path)
        if "cancel" not in self._perms(auth):
            return _jetty_error(422, f"Item for id ({queue_id}) is not cancellable", path)
        if item.left_at is not None:
            return _jetty_error(500, f"Could not cancel run for id {queue_id}", path)
        item.cancelled, item.left_at = True, time.time()
        return Response("", status=204)


# -- pages -------------------------------------------------------------------

def _layout_page(title: str, crumb: str | None, main: str) -> str:
    """A page rendered with lib/layout/layout.jelly: its <head> always has
    data-crumb-header (empty when crumbs are off)."""
    return (
        "<!DOCTYPE html><html class=\"\"><head resURL=\"/static/5a6e1c0b\" data-rooturl=\"\" "
        "data-resurl=\"/static/5a6e1c0b\" data-extensions-available=\"true\" data-unit-test=\"false\" "
        "data-imagesurl=\"/static/5a6e1c0b/images\" "
        f"data-crumb-header=\"{'Jenkins-Crumb' if crumb else ''}\" data-crumb-value=\"{crumb or ''}\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<script src=\"/static/5a6e1c0b/scripts/behavior.js\" type=\"text/javascript\"></script>\n"
        "</head><body id=\"jenkins\" class=\"yui-skin-sam full-screen jenkins-2.479.3\" data-version=\"2.479.3\">"
        "<div id=\"page-header\" class=\"page-header\">Jenkins</div>\n"
        f"<div id=\"main-panel\">{main}</div>\n</body></html>\n"
    )


def _oops_page(crumb: str | None, stack_trace: str) -> Response:
    """An uncaught exception: 500 with the "oops" layout page (jenkins/model/Jenkins/oops.jelly)."""
    main = ("<h1>Oops!</h1><div id=\"error-description\"><h2>A problem occurred while processing "
            "the request</h2><p>Logging ID=" + secrets.token_hex(16) + "</p></div>"
            f"<pre class=\"jenkins-hidden\">{html.escape(stack_trace)}\n\tat jenkins.model."
            "ParameterizedJobMixIn.doBuildWithParameters(ParameterizedJobMixIn.java:237)</pre>")
    return Response(_layout_page("Jenkins", crumb, main), status=500, mimetype="text/html")


def _remote_cause(request: Request, note: str | None) -> dict:
    addr = request.remote_addr or "127.0.0.1"
    return {"_class": "hudson.model.Cause$RemoteCause", "addr": addr, "note": note,
            "shortDescription": f"Started by remote host {addr}" + (f" with note: {note}" if note else "")}


def _user_cause(user: str | None) -> dict:
    """hudson/model/Cause.java UserIdCause: no note."""
    name = user or "anonymous"
    return {"_class": "hudson.model.Cause$UserIdCause", "shortDescription": f"Started by user {name}",
            "userId": user, "userName": name}


# -- the tree parameter --------------------------------------------------------

def parse_tree(text: str) -> dict[str, tuple[dict | None, tuple[int | None, int | None] | None]]:
    """``a,b[c,d]{0,5}`` -> {"a": (None, None), "b": ({"c": ..., "d": ...}, (0, 5))}."""
    pos = 0

    def fields() -> dict:
        nonlocal pos
        out = {}
        while pos < len(text):
            start = pos
            while pos < len(text) and text[pos] not in ",[]{}":
                pos += 1
            name, sub, rng = text[start:pos].strip(), None, None
            if pos < len(text) and text[pos] == "[":
                pos += 1
                sub = fields()
                pos += 1  # "]"
            if pos < len(text) and text[pos] == "{":
                end = text.index("}", pos)
                rng = _range(text[pos + 1:end])
                pos = end + 1
            if name:
                out[name] = (sub, rng)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            break  # "]" or the end
        return out

    return fields()


def _range(spec: str) -> tuple[int | None, int | None]:
    """Stapler's ranges: {M,N} is [M, N), {N} is [N, N+1), {M,} and {,N} open."""
    if "," not in spec:
        n = int(spec)
        return n, n + 1
    low, high = spec.split(",", 1)
    return (int(low) if low.strip() else None), (int(high) if high.strip() else None)


def prune(value: Any, tree: dict | None) -> Any:
    """Keep what ``tree`` names; an object always keeps its ``_class``; an
    object named without a sub-tree shows only its ``_class``."""
    if isinstance(value, list):
        return [prune(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {"_class": value["_class"]} if "_class" in value else {}
    if tree is None:
        return out
    for name, (sub, rng) in tree.items():
        keys = list(value) if name == "*" else [name]
        for key in keys:
            if key not in value or key == "_class":
                continue
            v = value[key]
            if rng is not None and isinstance(v, list):
                v = v[rng[0]:rng[1]]
            out[key] = prune(v, sub) if isinstance(v, (dict, list)) else v
    return out


def _job_default(data: dict) -> dict:
    """A job's answer without tree: builds (the newest 100) and lastBuild as {_class, number, url}."""
    def brief(b: dict) -> dict:
        return {"_class": b["_class"], "number": b["number"], "url": b["url"]}
    return {**data, "builds": [brief(b) for b in data["builds"][:100]],
            "lastBuild": data["lastBuild"] and brief(data["lastBuild"])}


def _kind(parts: list[str], request: Request) -> dict:
    """The request's kind (and job) for request_counts()."""
    if parts == ["api", "json"]:
        return {"kind": "root"}
    if parts[:1] == ["crumbIssuer"]:
        return {"kind": "crumb"}
    if parts == ["queue", "api", "json"]:
        return {"kind": "queue"}
    if parts[:2] == ["queue", "item"]:
        return {"kind": "queue_item"}
    if parts == ["queue", "cancelItem"]:
        return {"kind": "cancel"}
    if parts[:1] == ["buildByToken"]:
        return {"kind": "build_by_token", "job": request.values.get("job")}
    job, rest = _split_job(parts)
    if job is None:
        return {"kind": "other"}
    if rest in (["buildWithParameters"], ["build"]):
        return {"kind": "trigger", "job": job}
    if rest and rest[0].isdigit():
        return {"kind": "stop" if rest[1:] == ["stop"] else "build", "job": job}
    return {"kind": "job", "job": job}


def _pop(queued: dict[str, list[str]], job: str) -> str | None:
    waiting = queued.get(job)
    return waiting.pop(0) if waiting else None


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _split_job(parts: list[str]) -> tuple[str | None, list[str]]:
    """['job','a','job','b','5','api','json'] -> ('a/b', ['5','api','json'])."""
    names = []
    while len(parts) >= 2 and parts[0] == "job":
        names.append(parts[1])
        parts = parts[2:]
    return ("/".join(names) or None), parts
