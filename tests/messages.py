"""fedmsg envelopes shaped like the ones Pagure sends (Pagure 5 payloads).

The one place tests, stand-ins, the harness and bench/ build a bus envelope
(``envelope``). Shapes come from tests/fixtures/pagure.pull-request.*.json
and from a live Pagure 5.13 (tests/fixtures/pagure-5.13-recording/, read with
``recording()``). Each builder takes a PR dict as FakePagure's GET returns
it, so the message and the API agree, and returns ``{"topic", "msg",
"msg_id", "timestamp", "i"}``.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Iterator

FIXTURES = Path(__file__).parent / "fixtures"
RECORDING = FIXTURES / "pagure-5.13-recording" / "messages.jsonl"
PAGURE_PREFIX = "io.pagure.prod.pagure"
_counter = itertools.count(1)


def fixture(name: str) -> dict:
    """tests/fixtures/<name>.json."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def new_msg_id() -> str:
    """fedmsg makes msg_id from the year and a uuid4."""
    return f"{datetime.now().year}-{uuid.uuid4()}"


def envelope(topic: str, msg, *, timestamp: float | None = None, msg_id: str | None = None) -> dict:
    """A fedmsg envelope: fedmsg numbers messages per sender (``i``)."""
    return {
        "i": next(_counter),
        "msg": msg,
        "msg_id": msg_id or new_msg_id(),
        "timestamp": int(time.time() if timestamp is None else timestamp),
        "topic": topic,
    }


def recording(*, envelopes: bool = True) -> Iterator[dict]:
    """The messages of a real Pagure 5.13.3 run, in the order received (see
    tests/fixtures/pagure-5.13-recording/README.md). Each as a fedmsg
    envelope (its msg_id the recorded message id, its timestamp when it was
    received), or with ``envelopes=False`` as recorded: ``{received, topic,
    id, headers, body}``."""
    with RECORDING.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if envelopes:
                yield envelope(record["topic"], record["body"], timestamp=record["received"],
                               msg_id=record["id"])
            else:
                yield record


def epoch() -> str:
    """Pagure 5 writes dates as strings of float epoch seconds."""
    return f"{time.time():.6f}"


def user_json(base_url: str, name: str) -> dict:
    return {"full_url": f"{base_url}/user/{name}", "fullname": name.capitalize(),
            "name": name, "url_path": f"user/{name}"}


def _base_url(pr: dict) -> str:
    full = pr.get("user", {}).get("full_url", "https://pagure.io/user/x")
    return full.rsplit("/user/", 1)[0]


def pr_event(subtopic: str, pr: dict, agent: str, *, prefix: str = PAGURE_PREFIX, **extra) -> dict:
    """``<prefix>.pull-request.<subtopic>`` with ``msg = {agent, **extra, pullrequest}``."""
    msg = {"agent": agent, **extra, "pullrequest": copy.deepcopy(pr)}
    return envelope(f"{prefix}.pull-request.{subtopic}", msg)


def pr_new(pr: dict, *, agent: str | None = None, prefix: str = PAGURE_PREFIX) -> dict:
    return pr_event("new", pr, agent or pr["user"]["name"], prefix=prefix)


def pr_updated(pr: dict, *, prefix: str = PAGURE_PREFIX) -> dict:
    """Pagure 5 sends it on a push, as agent "pagure" with an empty comments list."""
    return pr_event("updated", {**pr, "comments": []}, "pagure", prefix=prefix)


def pr_rebased(pr: dict, *, prefix: str = PAGURE_PREFIX) -> dict:
    return pr_event("rebased", {**pr, "comments": []}, "pagure", prefix=prefix)


def comment_json(pr: dict, text: str, user: str, *, notification: bool = False) -> dict:
    """A PR comment as Pagure's API shows it; its id follows the PR's last one."""
    last = max((c.get("id", 0) for c in pr.get("comments") or []), default=0)
    return {"comment": text, "commit": None, "date_created": epoch(), "edited_on": None,
            "editor": None, "filename": None, "id": last + 1, "line": None,
            "notification": notification, "parent": None, "reactions": {}, "tree": None,
            "user": user_json(_base_url(pr), user)}


def pr_comment(pr: dict, text: str, user: str, notification: bool = False, *,
               prefix: str = PAGURE_PREFIX) -> dict:
    """comment.added for a NEW comment (appended last to a copy of the PR's
    comments). For a comment already on the PR (FakePagure.add_comment, push,
    close) use pr_event("comment.added", pr, agent)."""
    pr = {**pr, "comments": [*(pr.get("comments") or []),
                             comment_json(pr, text, user, notification=notification)]}
    return pr_event("comment.added", pr, user, prefix=prefix)


def pr_closed(pr: dict, merged: bool, *, agent: str | None = None,
              prefix: str = PAGURE_PREFIX) -> dict:
    """closed with ``merged``; an Open PR is shown closed (a real one always is)."""
    pr = copy.deepcopy(pr)
    agent = agent or (pr.get("closed_by") or {}).get("name") or pr["project"]["user"]["name"]
    if pr.get("status") == "Open":
        pr.update(status="Merged" if merged else "Closed", closed_at=epoch(),
                  closed_by=user_json(_base_url(pr), agent))
    return pr_event("closed", pr, agent, prefix=prefix, merged=merged)


def flag_json(flag: dict, base_url: str) -> dict:
    """A flag as Pagure 5's messages carry it (no uid there)."""
    user = flag.get("user")
    if isinstance(user, str) or user is None:
        user = user_json(base_url, user or flag.get("user_name", "cibot"))
    return {"comment": flag["comment"], "commit_hash": flag.get("commit_hash"),
            "date_created": flag.get("date_created", epoch()),
            "date_updated": flag.get("date_updated", epoch()), "percent": flag.get("percent"),
            "status": flag["status"], "url": flag["url"],
            "user": {k: user[k] for k in ("full_url", "fullname", "name", "url_path")},
            "username": flag["username"]}


def pr_flag_added(pr: dict, flag: dict, *, updated: bool = False, agent: str | None = None,
                  prefix: str = PAGURE_PREFIX) -> dict:
    """flag.added (or flag.updated) for a flag from FakePagure.flags()."""
    f = flag_json(flag, _base_url(pr))
    return pr_event("flag.updated" if updated else "flag.added", pr, agent or f["user"]["name"],
                    prefix=prefix, flag=f)


def pr_flag_updated(pr: dict, flag: dict, **kw) -> dict:
    return pr_flag_added(pr, flag, updated=True, **kw)
