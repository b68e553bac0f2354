"""poormanci's per-message decisions written plainly in Python, for the
cost-per-message benchmark: what a pure-Python consumer would do inside
``consume()`` for each message, in the same order as the Rust core
(src/event.rs ``parse``, src/policy.rs ``decide``, the engine's msg_id
dedupe): read the topic, the project, the status, the source, the last
comment and whether it is a Pagure update notification or a command; check
the branches like ``git check-ref-format --branch``; remember msg_ids and
built commits in dicts. Nothing is sent anywhere.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

MAX_FIELD = 4096
MAX_COMMENT = 64 * 1024
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")
_HEX = set("0123456789abcdefABCDEF")
_REF_BAD = set(" ~^:?*[\\\x7f")


def _text(v, limit=MAX_FIELD):
    return v if isinstance(v, str) and len(v) <= limit else None


def _get(d, key):
    return d.get(key) if isinstance(d, dict) else None


def valid_branch(name: str) -> bool:
    """git check-ref-format --branch, and no leading "-"."""
    if not name or name.startswith("-") or len(name) > 255 or name == "@":
        return False
    if "@{" in name or ".." in name or name.endswith(("/", ".")) or "//" in name:
        return False
    for ch in name:
        if ch < " " or ch in _REF_BAD:
            return False
    for part in name.split("/"):
        if not part or part.startswith(".") or part.endswith(".lock"):
            return False
    return True


def safe_name(s: str) -> bool:
    return bool(s) and s[0] not in "-." and all(c in _SAFE for c in s)


def valid_remote(url: str) -> bool:
    if url.startswith("-") or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("https", "http", "git") and bool(parts.hostname)


def is_update_notice(text: str) -> bool:
    t = text.strip()
    first = t.split("\n", 1)[0]
    if t in ("Pull-Request has been updated", "Pull-Request has been rebased", "rebased"):
        return True
    if t.startswith("rebased onto "):
        h = t[len("rebased onto "):]
        return bool(h) and all(c in _HEX for c in h)
    return first.startswith("**") and (first.endswith(" new commit added**") or first.endswith(" new commits added**"))


def parse_commands(text: str, ok="/ok-to-test", retest="/retest", test="/test") -> list:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line == ok:
            cmd = ("ok_to_test",)
        elif line == retest:
            cmd = ("retest",)
        elif line.startswith(test + " "):
            cmd = ("test", line[len(test) + 1:].strip())
        else:
            continue
        if cmd not in out:
            out.append(cmd)
    return out


class Malformed(ValueError):
    pass


class Rules:
    """``handle(topic, envelope)`` returns the decision, a tuple."""

    def __init__(self, config: dict):
        pagure, jenkins = config["poormanci.pagure"], config["poormanci.jenkins"]
        self.base = pagure["url"].rstrip("/")
        self.own = pagure.get("user")
        self.pr_prefix = pagure.get("topic", "io.pagure.prod.pagure").rstrip(".") + ".pull-request."
        self.build_prefix = jenkins.get("topic", "org.fedoraproject.prod.jenkins").rstrip(".") + ".build."
        self.projects = {p: (v["jobs"] if isinstance(v, dict) else v) for p, v in config["poormanci.projects"].items()}
        self.display = {}
        for p, jobs in self.projects.items():
            for j in jobs:
                self.display.setdefault(j.get("display_name") or j["job"].split("/")[0], []).append((p, j["job"]))
        self.trusted = set((config.get("poormanci.trusted") or {}).get("users") or [])
        self.seen: dict[str, float] = {}
        self.built: set[tuple] = set()

    def handle(self, topic, envelope):
        msg_id = _text(_get(envelope, "msg_id"))
        if not isinstance(topic, str):
            return ("drop", "the topic is not a string")
        try:
            event = self.parse(topic, envelope)
        except Malformed as e:
            return ("drop", f"malformed: {e}")
        if event[0] == "not-ours":
            return ("ignore", event[1])
        if msg_id is not None:
            if msg_id in self.seen:
                return ("ignore", "already handled (same msg_id)")
            self.seen[msg_id] = time.time()
        return self.decide(event)

    # -- reading ------------------------------------------------------------
    def parse(self, topic, envelope):
        if topic.startswith(self.pr_prefix):
            body = _get(envelope, "msg")
            if not isinstance(body, dict):
                raise Malformed("msg: expected a dict")
            pr = body.get("pullrequest") or body.get("pull_request")
            if not isinstance(pr, dict):
                raise Malformed("msg.pullrequest: expected a dict")
            return ("pr", topic[len(self.pr_prefix):], _text(body.get("agent")), self.parse_pr(pr))
        if topic.startswith(self.build_prefix):
            status = topic[len(self.build_prefix):]
            if status == "start":
                return ("not-ours", "a build start is not a result")
            body = _get(envelope, "msg")
            name, number = _text(_get(body, "project")), _get(body, "build")
            if name is None:
                raise Malformed("msg.project: expected a job name")
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise Malformed("msg.build: expected a build number")
            return ("build", name, number, status)
        return ("not-ours", "not a topic poormanci listens to")

    def parse_pr(self, pr: dict) -> dict:
        project = pr.get("project")
        if not isinstance(project, dict):
            raise Malformed("pullrequest.project: expected a dict")
        status = pr.get("status")
        if status is True or status == "Open":
            status = "Open"
        elif status is False or status == "Closed":
            status = "Closed"
        elif status == "Merged":
            pass
        else:
            raise Malformed("pullrequest.status: expected Open, Merged, Closed, true or false")
        repo = pr.get("repo_from")
        if isinstance(repo, dict) and repo.get("parent") is not None:
            user = _text(_get(repo.get("user"), "name"))
            if user is None:
                raise Malformed("pullrequest.repo_from.user.name: expected a string")
            source = ("fork", user)
        elif repo is not None:
            source = ("same",)
        else:
            url = _text(pr.get("remote_git"))
            if url is None:
                raise Malformed("pullrequest.remote_git: expected a git URL when repo_from is null")
            source = ("remote", url)
        comments = pr.get("comments")
        last = None
        if isinstance(comments, list) and comments:
            c = comments[-1]
            last = {"text": _text(_get(c, "comment"), MAX_COMMENT),
                    "notification": _get(c, "notification") is True,
                    "user": _text(_get(_get(c, "user"), "name"))}
        name = _text(project.get("name"))
        if name is None:
            raise Malformed("pullrequest.project.name: expected a string")
        ns = _text(project.get("namespace"))
        pid = pr.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise Malformed("pullrequest.id: expected a number")
        fields = {}
        for key in ("branch", "branch_from"):
            fields[key] = _text(pr.get(key))
            if fields[key] is None:
                raise Malformed(f"pullrequest.{key}: expected a string")
        author = _text(_get(pr.get("user"), "name"))
        if author is None:
            raise Malformed("pullrequest.user.name: expected a string")
        return {"project": f"{ns}/{name}" if ns else name, "target_is_fork": project.get("parent") is not None,
                "id": pid, "status": status, "commit": _text(pr.get("commit_stop")), "author": author,
                "source": source, "last_comment": last, **fields}

    # -- deciding -----------------------------------------------------------
    def decide(self, event):
        if event[0] == "build":
            jobs = self.display.get(event[1])
            return ("build-finished", jobs, event[2]) if jobs else ("ignore", f"Jenkins job {event[1]!r} is not configured")
        _, action, agent, pr = event
        if self.own is not None and agent == self.own:
            return ("ignore", "an echo of poormanci's own action")
        jobs = self.projects.get(pr["project"])
        if jobs is None or pr["target_is_fork"]:
            return ("ignore", f"project {pr['project']} is not configured")
        last = pr["last_comment"]
        commands = parse_commands(last["text"] or "") if action == "comment.added" and last and not last["notification"] else []
        if not commands:
            why = self.wants_build(action, last)
            if why:
                return ("ignore", why)
        if pr["status"] != "Open":
            return ("ignore", f"{pr['project']}#{pr['id']} is {pr['status']}")
        for what, b in (("source branch", pr["branch_from"]), ("target branch", pr["branch"])):
            if not valid_branch(b):
                return ("refuse", f"{what} {b!r} is not a valid git branch name")
        source = pr["source"]
        if source[0] == "same":
            repo = f"{self.base}/{pr['project']}.git"
        elif source[0] == "fork":
            if not safe_name(source[1]):
                return ("refuse", f"fork owner {source[1]!r} is not a valid user name")
            repo = f"{self.base}/forks/{source[1]}/{pr['project']}.git"
        else:
            if not valid_remote(source[1]):
                return ("refuse", f"remote {source[1]!r} is not an http(s) or git URL")
            repo = source[1]
        spec = {"project": pr["project"], "pr": pr["id"], "commit": pr["commit"], "repo": repo,
                "branch": pr["branch_from"], "branch_to": pr["branch"],
                "pr_url": f"{self.base}/{pr['project']}/pull-request/{pr['id']}"}
        if commands:
            user = (last and last["user"]) or agent or ""
            return ("commands", commands, user, spec)
        runs = []
        for j in jobs:
            key = (pr["project"], pr["id"], j["job"], pr["commit"])
            if pr["commit"] is not None and key in self.built:
                continue
            if pr["commit"] is not None:
                self.built.add(key)
            runs.append({**spec, "job": j["job"]})
        if not runs:
            return ("ignore", "already built")
        return ("trigger", runs, pr["author"], pr["author"] in self.trusted)

    def wants_build(self, action, last):
        if action in ("new", "updated", "rebased"):
            return None
        if action == "comment.added":
            if last is None:
                return "a comment.added without comments"
            if not last["notification"]:
                return "a comment by a person"
            if self.own is not None and last["user"] == self.own:
                return "poormanci's own comment"
            if last["text"] is not None and is_update_notice(last["text"]):
                return None
            return "a Pagure notification that is not an update"
        return f"pull-request.{action} does not trigger builds"
