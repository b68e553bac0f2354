"""A stand-in Pagure 5 API: PRs, comments and flags, with the real errors.

Requests, answers and errors follow what a real Pagure 5.13 answered, and its
source (repository Pagure/pagure, tag 5.13.3; files named below): token auth
and ACLs (pagure/utils.py check_api_acls: 401 EINVALIDTOK, with "Missing
ACLs: …", "Invalid token" or "Expired token"; pagure/api/utils.py
_check_token: a project token used on another project), 404 ENOPROJECT /
ENOREQ, 400 EINVALIDREQ with the form errors, flags stored per (commit, uid)
(pagure/lib/model.py CommitFlag), ``POST /api/0/-/whoami``
(pagure/api/__init__.py). Test helpers change the PRs the way pushes,
comments, merges and ACL changes do, and return the bus messages Pagure would
send for them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

import messages
from messages import epoch, user_json

from . import Recorded, StandIn

CI_ACLS = ("pull_request_comment", "pull_request_flag")
# Not needed by poormanci; with it, it closes pending flags left on older commits.
COMMIT_FLAG = "commit_flag"
# pagure/lib/model.py CommitFlag.uid is a String(32): PostgreSQL refuses a
# longer one and the API answers 400 EDBERROR (SQLite, as in a test
# instance, would keep it: uid_limit = None).
UID_LIMIT = 32
EDBERROR = ("An error occurred at the database level and prevent the action from reaching "
            "completion")
FLAG_STATUSES = ("success", "failure", "error", "pending", "canceled")
REQUIRED = ["This field is required."]

# pagure.utils.urlpattern (scheme, optional user:pass, IP or dotted host name,
# port, path), plus "localhost", which Pagure 5.13 was seen to accept.
_MID = r"(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5]))"
_LAST = r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
URL_PATTERN = re.compile(
    r"^(?:(?:https?|ftp)://)(?:\S+(?::\S*)?@)?(?:"
    rf"(?:(?:10|127){_MID}{{2}}{_LAST})|(?:(?:169\.254|192\.168){_MID}{_LAST})|"
    rf"(?:172\.(?:1[6-9]|2\d|3[0-1]){_MID}{_LAST})|"
    rf"(?:(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3]){_MID}{{2}}{_LAST})|"
    r"localhost|"
    r"(?:(?:[a-z\u00a1-\uffff0-9]-?)*[a-z\u00a1-\uffff0-9]+)"
    r"(?:\.(?:[a-z\u00a1-\uffff0-9]-?)*[a-z\u00a1-\uffff0-9]+)*"
    r"(?:\.(?:[a-z\u00a1-\uffff]{2,})))"
    r"(?::\d{2,5})?(?:/\S*)?$",
    re.IGNORECASE,
)


def _hex40() -> str:
    return secrets.token_hex(20)


@dataclass
class Token:
    user: str
    acls: set[str]
    project: str | None = None  # a project token works on that project only
    expired: bool = False


class FakePagure(StandIn):
    """Pagure with one CI token (``token``, user ``user``, ACLs pull_request_comment
    and pull_request_flag); ``add_token`` adds others, ``expire_token`` ends one.

    Flags live per (commit, uid), as in Pagure: ``flags(project, id)`` shows the
    PR's current head's, like ``GET …/pull-request/N/flag``.

    Records: ``requests`` (every request), ``flag_history`` (every flag POST in
    order: project, id, data, code, message, uid, time), ``outbox`` (the bus
    messages Pagure would have sent for what happened: API comments and flags,
    and the helpers' pushes, comments, closes).
    """

    name = "pagure"

    def __init__(self, token: str = "cibot-token-0123456789abcdef", *, user: str = "cibot",
                 prefix: str = messages.PAGURE_PREFIX, seed: int = 0):
        super().__init__(seed=seed)
        self.token, self.user, self.prefix = token, user, prefix
        self.tokens: dict[str, Token] = {token: Token(user, set(CI_ACLS))}
        self.uid_limit: int | None = UID_LIMIT
        self._flags: dict[tuple[str, str], dict] = {}  # (commit, uid) -> flag, oldest first
        self.flag_history: list[dict] = []
        self.outbox: list[dict] = []
        self._projects: dict[str, dict] = {}  # fullname -> record (forks: "forks/<user>/<fullname>")
        self._prs: dict[tuple[str, int], dict] = {}
        # (project, commit) of every PR head: Pagure keeps them in the target
        # repository (refs/pull/N/head), where /c/<commit>/flag finds them.
        self._commits: set[tuple[str, str]] = set()
        self._next_project_id = 1
        self.groups: dict[str, list[str]] = {}

    # -- setting the scene ------------------------------------------------
    def add_token(self, token: str, acls=(), user: str = "nobody", *, project: str | None = None,
                  expired: bool = False):
        """An API token of ``user`` with these ACLs; ``project``: a project token."""
        with self._lock:
            self.tokens[token] = Token(user, set(acls), project and _full(project), expired)

    def expire_token(self, token: str):
        """Pagure tokens expire (two years at most): every use is then a 401."""
        with self._lock:
            self.tokens[token].expired = True

    def add_user_access(self, project: str, user: str, access: str = "commit", *,
                        by: str | None = None) -> dict:
        """Give ``user`` ``access`` (admin, commit, collaborator, ticket) on the
        project, at once visible through the API. Returns project.user.added."""
        with self._lock:
            p = self._projects[_full(project)]
            for level in p["users"].values():
                if user in level:
                    level.remove(user)
            p["users"][access].append(user)
            env = messages.envelope(f"{self.prefix}.project.user.added", {
                "project": self._project_json(p["fullname"]), "new_user": user, "access": access,
                "branches": None, "agent": by or p["owner"]})
            self.outbox.append(env)
            return env

    def add_group_access(self, project: str, group: str, access: str = "commit", *,
                         by: str | None = None) -> dict:
        """Give a group ``access`` on the project. Returns project.group.added."""
        with self._lock:
            p = self._projects[_full(project)]
            self.groups.setdefault(group, [])
            p["groups"][access].append(group)
            env = messages.envelope(f"{self.prefix}.project.group.added", {
                "project": self._project_json(p["fullname"]), "new_group": group, "access": access,
                "branches": None, "agent": by or p["owner"]})
            self.outbox.append(env)
            return env

    def add_group_member(self, group: str, user: str):
        with self._lock:
            self.groups.setdefault(group, []).append(user)

    def add_group(self, name: str, members=()):
        """A Pagure group (GET /api/0/group/<name> lists its members)."""
        with self._lock:
            self.groups[name] = list(members)

    def add_project(self, name: str, namespace: str | None = None, *, owner: str = "ralph",
                    admin=(), commit=(), ticket=(), collaborator=(), groups: dict | None = None) -> dict:
        """A project; ``groups`` = {"admin": [...], "commit": [...], ...}. Returns its API JSON."""
        namespace, name = _split(name, namespace)
        fullname = f"{namespace}/{name}" if namespace else name
        with self._lock:
            self._projects[fullname] = self._project_record(
                name, namespace, fullname, owner, parent=None,
                users={"admin": list(admin), "collaborator": list(collaborator),
                       "commit": list(commit), "ticket": list(ticket)},
                groups={"admin": [], "collaborator": [], "commit": [], "ticket": [], **(groups or {})})
            return self._project_json(fullname)

    def add_pr(self, project: str = "pungi", id: int | None = None, *, author: str = "alice",
               fork_user: Any = "<author>", branch_from: str = "fix", branch: str = "master",
               commit: str | None = None, status: str = "Open", namespace: str | None = None,
               title: str | None = None, remote_git: str | None = None,
               initial_comment: str | None = None) -> dict:
        """A PR (its project is made if missing). ``fork_user`` defaults to the
        author; None means a branch of the project itself. Returns the GET JSON."""
        namespace, name = _split(project, namespace)
        fullname = f"{namespace}/{name}" if namespace else name
        fork_user = author if fork_user == "<author>" else fork_user
        with self._lock:
            if fullname not in self._projects:
                self.add_project(name, namespace)
            if remote_git:
                repo_from = None
            elif fork_user:
                repo_from = f"forks/{fork_user}/{fullname}"
                if repo_from not in self._projects:
                    parent = self._projects[fullname]
                    self._projects[repo_from] = self._project_record(
                        name, namespace, repo_from, fork_user, parent=fullname,
                        users={k: [] for k in parent["users"]}, groups={k: [] for k in parent["groups"]})
            else:
                repo_from = fullname
            if id is None:
                id = 1 + max((i for (p, i) in self._prs if p == fullname), default=0)
            commit = commit or _hex40()
            now = epoch()
            self._prs[(fullname, id)] = {
                "id": id, "uid": uuid.uuid4().hex, "project": fullname, "repo_from": repo_from,
                "remote_git": remote_git, "author": author, "branch": branch,
                "branch_from": branch_from, "commit_start": commit, "commit_stop": commit,
                "status": status, "title": title or f"Change {branch_from}",
                "initial_comment": initial_comment, "comments": [],
                "date_created": now, "last_updated": now, "updated_on": now,
                "closed_at": None, "closed_by": None,
            }
            self._commits.add((fullname, commit))
            pr = self._pr_json(fullname, id)
            self.outbox.append(messages.pr_new(pr, prefix=self.prefix))
            return pr

    def load_pr(self, pr: dict):
        """Make the PR what a recorded message shows it to be (its head,
        status, branches, fork), as a real Pagure was when it sent it: a
        recording replayed against the stand-in meets the same answers."""
        fullname = pr["project"]["fullname"]
        with self._lock:
            if fullname not in self._projects:
                self.add_project(fullname, owner=pr["project"]["user"]["name"])
            fork = (pr.get("repo_from") or {}).get("fullname")
            if fork and fork not in self._projects:
                parent = self._projects[fullname]
                self._projects[fork] = self._project_record(
                    parent["name"], parent["namespace"], fork, pr["repo_from"]["user"]["name"], parent=fullname,
                    users={k: [] for k in parent["users"]}, groups={k: [] for k in parent["groups"]})
            rec = self._prs.get((fullname, pr["id"]))
            if rec is None:
                rec = self._prs[(fullname, pr["id"])] = {
                    "id": pr["id"], "uid": pr["uid"], "project": fullname, "remote_git": pr.get("remote_git"),
                    "author": pr["user"]["name"], "comments": [], "initial_comment": pr.get("initial_comment"),
                    "title": pr["title"], "date_created": pr["date_created"], "closed_at": None, "closed_by": None}
            rec.update(repo_from=fork, branch=pr["branch"], branch_from=pr["branch_from"],
                       commit_start=pr["commit_start"], commit_stop=pr["commit_stop"], status=pr["status"],
                       last_updated=pr["last_updated"], updated_on=pr["updated_on"])
            self._commits.add((fullname, pr["commit_stop"]))

    # -- things that happen on Pagure (return the bus messages) ---------------
    def pr(self, project: str, id: int) -> dict:
        """The PR as GET returns it."""
        with self._lock:
            return self._pr_json(_full(project), id)

    def push(self, project: str, id: int, new_commit: str | None = None, *, rebase: bool = False,
             message: str = "Fix it", by: str | None = None) -> list[dict]:
        """A push to the PR's branch: commit_stop changes and Pagure adds its
        notification comment. Returns [updated|rebased, comment.added]."""
        with self._lock:
            rec = self._rec(project, id)
            rec["commit_stop"] = new_commit or _hex40()
            self._commits.add((rec["project"], rec["commit_stop"]))
            if rebase:
                rec["commit_start"] = rec["commit_stop"]
                text = f"rebased onto {_hex40()}"
            else:
                text = f"**1 new commit added**\n\n * ``{message}``\n"
            pusher = by or rec["author"]
            self._add_comment(rec, text, pusher, notification=True)
            pr = self._pr_json(rec["project"], id)
            first = (messages.pr_rebased if rebase else messages.pr_updated)(pr, prefix=self.prefix)
            out = [first, messages.pr_event("comment.added", pr, pusher, prefix=self.prefix)]
            self.outbox.extend(out)
            return out

    def add_comment(self, project: str, id: int, text: str, user: str,
                    notification: bool = False) -> dict:
        """Someone comments on the PR. Returns the comment.added message."""
        with self._lock:
            rec = self._rec(project, id)
            self._add_comment(rec, text, user, notification=notification)
            env = messages.pr_event("comment.added", self._pr_json(rec["project"], id), user,
                                    prefix=self.prefix)
            self.outbox.append(env)
            return env

    def close(self, project: str, id: int, *, merged: bool = False, by: str | None = None) -> list[dict]:
        """Close or merge the PR. Returns [comment.added, closed]."""
        with self._lock:
            rec = self._rec(project, id)
            by = by or self._projects[rec["project"]]["owner"]
            self._add_comment(rec, f"Pull-Request has been {'merged' if merged else 'closed'} by {by}",
                              by, notification=True)
            rec.update(status="Merged" if merged else "Closed", closed_at=epoch(), closed_by=by)
            pr = self._pr_json(rec["project"], id)
            out = [messages.pr_event("comment.added", pr, by, prefix=self.prefix),
                   messages.pr_event("closed", pr, by, prefix=self.prefix, merged=merged)]
            self.outbox.extend(out)
            return out

    # -- reading what happened ----------------------------------------------
    def flags(self, project: str, id: int, *, commit: str | None = None) -> list[dict]:
        """The flags of the PR's current head (or of ``commit``) in its project,
        as GET …/flag lists them: uid, username, status, comment, url, percent,
        commit_hash, user (name), date_created, date_updated; oldest first."""
        with self._lock:
            rec = self._rec(project, id)
            return copy.deepcopy(self._commit_flags(rec["project"], commit or rec["commit_stop"]))

    def _commit_flags(self, project: str, commit: str) -> list[dict]:
        # pagure/lib/query.py get_commit_flag: by project and commit.
        return [f for (c, _), f in self._flags.items() if c == commit and f["project"] == project]

    def comments(self, project: str, id: int) -> list[dict]:
        """Comments as the API shows them (comment, user{name}, notification, ...)."""
        with self._lock:
            return self._pr_json(_full(project), id)["comments"]

    # -- JSON shapes ----------------------------------------------------------
    def _project_record(self, name, namespace, fullname, owner, *, parent, users, groups) -> dict:
        pid, self._next_project_id = self._next_project_id, self._next_project_id + 1
        return {"id": pid, "name": name, "namespace": namespace, "fullname": fullname,
                "owner": owner, "parent": parent, "users": users, "groups": groups,
                "date_created": epoch()}

    def _project_json(self, fullname: str) -> dict:
        p = self._projects[fullname]
        url_path = ("fork/" + fullname[len("forks/"):]) if p["parent"] else fullname
        return {
            "access_groups": copy.deepcopy(p["groups"]),
            "access_users": {**copy.deepcopy(p["users"]), "owner": [p["owner"]]},
            "close_status": [], "custom_keys": [], "date_created": p["date_created"],
            "date_modified": p["date_created"], "description": f"{p['name']} project",
            "full_url": f"{self.url}/{url_path}", "fullname": fullname, "id": p["id"],
            "milestones": {}, "name": p["name"], "namespace": p["namespace"],
            "parent": self._project_json(p["parent"]) if p["parent"] else None,
            "priorities": {}, "tags": [], "url_path": url_path,
            "user": user_json(self.url, p["owner"]),
        }

    def _pr_json(self, fullname: str, id: int) -> dict:
        r = self._prs[(fullname, id)]
        return {
            "assignee": None, "branch": r["branch"], "branch_from": r["branch_from"],
            "cached_merge_status": "unknown", "closed_at": r["closed_at"],
            "closed_by": user_json(self.url, r["closed_by"]) if r["closed_by"] else None,
            "comments": copy.deepcopy(r["comments"]), "commit_start": r["commit_start"],
            "commit_stop": r["commit_stop"], "date_created": r["date_created"],
            "full_url": f"{self.url}/{fullname}/pull-request/{id}", "id": id,
            "initial_comment": r["initial_comment"], "last_updated": r["last_updated"],
            "project": self._project_json(fullname), "remote_git": r["remote_git"],
            "repo_from": self._project_json(r["repo_from"]) if r["repo_from"] else None,
            "status": r["status"], "tags": [], "threshold_reached": None, "title": r["title"],
            "uid": r["uid"], "updated_on": r["updated_on"], "user": user_json(self.url, r["author"]),
        }

    def _flag_json(self, flag: dict, *, emails: bool) -> dict:
        user = user_json(self.url, flag["user"])
        if emails:  # the POST answer shows the token user's emails, GET does not
            user = {"default_email": f"{flag['user']}@example.test",
                    "emails": [f"{flag['user']}@example.test"], **user}
        return {"comment": flag["comment"], "commit_hash": flag["commit_hash"],
                "date_created": flag["date_created"], "date_updated": flag["date_updated"],
                "percent": flag["percent"], "status": flag["status"], "url": flag["url"],
                "user": user, "username": flag["username"]}

    def _rec(self, project: str, id: int) -> dict:
        return self._prs[(_full(project), id)]

    def _add_comment(self, rec: dict, text: str, user: str, *, notification: bool):
        c = messages.comment_json(self._pr_json(rec["project"], rec["id"]), text, user,
                                  notification=notification)
        rec["comments"].append(c)
        rec["last_updated"] = rec["updated_on"] = c["date_created"]

    # -- HTTP -----------------------------------------------------------------
    def error_response(self, status: int) -> Response:
        return Response("<html><body><h1>Internal Server Error</h1></body></html>",
                        status=status, mimetype="text/html")

    def dispatch(self, request: Request, rec: Recorded) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] != ["api", "0"]:
            return Response("<h1>Page not found :'(</h1>", status=404, mimetype="text/html")
        parts = parts[2:]
        if parts == ["version"] and request.method == "GET":
            return _json(200, {"version": "0.31"})
        if parts == ["-", "whoami"] and request.method == "POST":
            with self._lock:
                return self._whoami(request)
        data = _request_data(request)
        with self._lock:
            if "pull-request" in parts:
                i = parts.index("pull-request")
                repo, rest = "/".join(parts[:i]), parts[i + 1:]
                if not 1 <= i <= 2 or not rest or not rest[0].isdigit():
                    return _json(404, {"error": "Not found", "error_code": "ENOCODE"})
                return self._pr_route(request, repo, int(rest[0]), rest[1:], data)
            if len(parts) >= 4 and parts[-3] == "c" and parts[-1] == "flag" and request.method == "POST":
                return self._commit_flag_route(request, "/".join(parts[:-3]), parts[-2], data)
            if len(parts) == 2 and parts[0] == "group" and request.method == "GET":
                return self._group_route(parts[1])
            if 1 <= len(parts) <= 2 and request.method == "GET":
                repo = "/".join(parts)
                if repo not in self._projects:
                    return _json(404, {"error": "Project not found", "error_code": "ENOPROJECT"})
                return _json(200, self._project_json(repo))
        return _json(404, {"error": "Not found", "error_code": "ENOCODE"})

    def _group_route(self, name: str) -> Response:
        # pagure/api/group.py view_group: the members are user names.
        if name not in self.groups:
            return _json(404, {"error": "Group not found", "error_code": "ENOGROUP"})
        return _json(200, {"name": name, "display_name": name, "description": None, "group_type": "user",
                           "creator": {"name": "admin", "fullname": "admin"}, "date_created": epoch(),
                           "members": list(self.groups[name])})

    def _pr_route(self, request: Request, repo: str, id: int, action: list[str], data: dict) -> Response:
        post = request.method == "POST"
        acl = {("comment",): "pull_request_comment", ("flag",): "pull_request_flag"}.get(tuple(action))
        if (post and acl is None) or (not post and action not in ([], ["flag"])):
            return Response("<h1>Method not allowed</h1>", status=405, mimetype="text/html")
        user = None
        if post:  # the auth decorator runs before the project is looked up
            user, error = self._check_token(request, acl)
            if error:
                return error
        if repo not in self._projects:
            return _json(404, {"error": "Project not found", "error_code": "ENOPROJECT"})
        if post and self.tokens[request_token(request)].project not in (None, repo):
            # pagure/api/utils.py _check_token: a project token elsewhere.
            return _json(401, {"error": self._einvalidtok(), "error_code": "EINVALIDTOK"})
        if (repo, id) not in self._prs:
            return _json(404, {"error": "Pull-Request not found", "error_code": "ENOREQ"})
        pr = self._prs[(repo, id)]
        if not post:
            if action == ["flag"]:  # pagure/api/fork.py api_pull_request_get_flag: the head's flags
                return _json(200, {"flags": [self._flag_json(f, emails=False)
                                             for f in self._commit_flags(repo, pr["commit_stop"])]})
            return _json(200, self._pr_json(repo, id))
        if action == ["comment"]:
            return self._comment(pr, data, user)
        return self._flag(pr, data, user)

    def _commit_flag_route(self, request: Request, repo: str, commit: str, data: dict) -> Response:
        """pagure/api/project.py api_commit_add_flag: ACL commit_flag, the
        commit must be in the project's repository (404 ENOCOMMIT), the flag
        found by (commit, uid) as for a PR."""
        user, error = self._check_token(request, COMMIT_FLAG)
        if error:
            return error
        if repo not in self._projects:
            return _json(404, {"error": "Project not found", "error_code": "ENOPROJECT"})
        if (repo, commit) not in self._commits:
            return _json(404, {"error": "No such commit found in this repository", "error_code": "ENOCOMMIT"})
        pr = next((p for p in self._prs.values() if p["project"] == repo), None)
        return self._flag({**(pr or {}), "project": repo, "id": None, "commit_stop": commit}, data, user,
                          announce=False)

    def _check_token(self, request: Request, acl: str | None):
        """pagure/utils.py check_api_acls: the token's errors come in this
        order (unknown, expired, missing ACL), each a 401 EINVALIDTOK."""
        found = self.tokens.get(request_token(request))
        if found is None:
            return None, self._invalid_token("Invalid token")
        if found.expired:
            return None, self._invalid_token("Expired token")
        if acl is not None and acl not in found.acls:
            return None, self._invalid_token(f"Missing ACLs: {acl}")
        return found.user, None

    def _einvalidtok(self) -> str:
        return (f"Invalid or expired token. Please visit {self.url}/settings#nav-api-tab "
                "to get or renew your API token.")

    def _invalid_token(self, errors: str) -> Response:
        return _json(401, {"error": self._einvalidtok(), "error_code": "EINVALIDTOK", "errors": errors})

    def _whoami(self, request: Request) -> Response:
        """pagure/api/__init__.py api_whoami (api_login_optional): the token's
        user; a bad or expired token is the usual 401, no token a 401 without
        "errors"."""
        if not request_token(request):
            return _json(401, {"error": self._einvalidtok(), "error_code": "EINVALIDTOK"})
        user, error = self._check_token(request, None)
        return error or _json(200, {"username": user})

    def _comment(self, pr: dict, data: dict, user: str) -> Response:
        if not _filled(data.get("comment")):
            return _invalid({"comment": REQUIRED})
        self._add_comment(pr, str(data["comment"]), user, notification=False)
        self.outbox.append(messages.pr_event("comment.added", self._pr_json(pr["project"], pr["id"]),
                                             user, prefix=self.prefix))
        return _json(200, {"message": "Comment added"})

    def _flag(self, pr: dict, data: dict, user: str, *, announce: bool = True) -> Response:
        history = {"project": pr["project"], "id": pr["id"], "data": dict(data),
                   "time": time.time(), "code": 400, "message": None, "uid": None, "commit": None}
        self.flag_history.append(history)
        errors = self._flag_errors(data)
        if errors:
            return _invalid(errors)
        percent = str(data.get("percent") or "").strip() or None
        if "status" in data:
            status = str(data["status"]).strip()
        else:  # the legacy form: the status follows from percent
            status = "pending" if percent is None else "failure" if percent == "0" else "success"
        changes = {"status": status, "comment": str(data["comment"]).strip(),
                   "url": str(data["url"]).strip(), "percent": None if percent is None else int(percent),
                   "date_updated": epoch()}
        uid = str(data.get("uid") or "").strip() or uuid.uuid4().hex
        if self.uid_limit is not None and len(uid) > self.uid_limit:
            return _json(400, {"error": EDBERROR, "error_code": "EDBERROR"})
        # pagure/lib/query.py add_commit_flag: a flag is found by (commit, uid)
        # whatever PR it was set through, and updated in place (comment,
        # percent, status, url; not its username, user or project).
        commit = pr["commit_stop"]
        flag = self._flags.get((commit, uid))
        if flag is not None:
            flag.update(changes)
            message = "Flag updated"
        else:
            flag = {"uid": uid, "username": str(data["username"]), "commit_hash": commit,
                    "user": user, "project": pr["project"], "date_created": changes["date_updated"],
                    **changes}
            self._flags[(commit, uid)] = flag
            message = "Flag added"
        history.update(code=200, message=message, uid=uid, commit=commit)
        if announce:
            pr_json = self._pr_json(pr["project"], pr["id"])
            self.outbox.append(messages.pr_flag_added(pr_json, flag, updated=message == "Flag updated",
                                                      prefix=self.prefix))
        email_hash = hashlib.sha256(f"{user}@example.test".encode()).hexdigest()
        return _json(200, {
            "avatar_url": f"https://seccdn.libravatar.org/avatar/{email_hash}?s=30&d=retro",
            "flag": self._flag_json(flag, emails=True), "message": message, "uid": uid,
            "user": user})

    @staticmethod
    def _flag_errors(data: dict) -> dict:
        errors: dict[str, list[str]] = {}
        for key in ("username", "comment"):
            if not _filled(data.get(key)):
                errors[key] = REQUIRED
        if not _filled(data.get("url")):
            errors["url"] = REQUIRED
        elif not URL_PATTERN.match(str(data["url"])):
            errors["url"] = ["Invalid input."]
        if "status" in data:
            status = str(data["status"]).strip()
            if status not in FLAG_STATUSES:
                errors["status"] = ["Not a valid choice."] + ([] if status else REQUIRED)
        percent = str(data.get("percent") or "").strip()
        if percent and not percent.isdigit():  # not recorded: Pagure's column is an integer
            errors["percent"] = ["Not a valid integer value."]
        return errors


def request_token(request: Request) -> str:
    """pagure/utils.py check_api_acls: whatever follows "token" in the Authorization header."""
    authorization = request.headers.get("Authorization", "")
    return authorization.split("token", 1)[1].strip() if "token" in authorization else ""


def _split(project: str, namespace: str | None) -> tuple[str | None, str]:
    if "/" in project:
        namespace, project = project.split("/", 1)
    return namespace, project


def _full(project: str, namespace: str | None = None) -> str:
    namespace, name = _split(project, namespace)
    return f"{namespace}/{name}" if namespace else name


def _filled(value) -> bool:
    """wtforms' DataRequired: present and not blank."""
    return value is not None and str(value).strip() != ""


def _request_data(request: Request) -> dict:
    """Pagure reads a form, or else a JSON object body."""
    if request.form:
        return request.form.to_dict()
    body = request.get_json(silent=True) if request.is_json else None
    return body if isinstance(body, dict) else {}


def _invalid(errors: dict) -> Response:
    return _json(400, {"error": "Invalid or incomplete input submitted",
                       "error_code": "EINVALIDREQ", "errors": errors})


def _json(status: int, data: Any) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")
