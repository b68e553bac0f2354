"""Type stubs for the native core (src/python.rs). `make test` checks them
against the built module with `python -m mypy.stubtest poormanci._core`."""

from typing import Any, Mapping, TypedDict, final

__all__ = ["ConfigError", "check_config", "check_pagure_token", "read_status", "Core"]

class _JobSummary(TypedDict):
    job: str
    display_name: str
    branches: list[str]
    parameters: dict[str, str]

class _WebSummary(TypedDict):
    listen: str | None
    public_url: str | None
    history_days: int

class _ConfigSummary(TypedDict):
    projects: dict[str, list[_JobSummary]]
    topics: list[str]
    state_dir: str
    web: _WebSummary

class _CheckedConfig(TypedDict):
    problems: list[str]
    warnings: list[str]
    summary: _ConfigSummary | None

class _TokenVerdict(TypedDict):
    problems: list[str]
    warnings: list[str]
    summary: str | None

class ConfigError(ValueError):
    """The configuration is wrong; ``problems`` lists every problem, one line each,
    e.g. ``poormanci.projects['pungi'][0].token: missing``."""

    problems: list[str]

def check_config(config: Mapping[str, Any]) -> _CheckedConfig:
    """A fedmsg config dict (the whole merged dict) checked: every problem ([]
    when it is fine), the warnings (unknown keys, with the close match) and,
    without problems, a summary of the projects, jobs, topics, state_dir and
    status page (``poormanci.web``)."""

def check_pagure_token(config: Mapping[str, Any]) -> _TokenVerdict:
    """Ask Pagure about the configured token (``POST /api/0/-/whoami``) and its
    ACLs on every configured project: ``problems`` (refused, an ACL missing, no
    such project), ``warnings`` (Pagure unreachable: not checked) and a
    ``summary`` line once Pagure answered."""

def read_status(source: str | dict[str, Any]) -> dict[str, Any]:
    """What the state store in ``state_dir`` holds: runs not finished, tasks
    waiting or retrying and their last errors. Read-only; safe while a hub runs."""

@final
class Core:
    """The engine: config, state store, a tokio runtime with the HTTP clients.

    One per process. Building it checks the config (ConfigError), opens the
    state store and resumes the work left there by an earlier run.
    """

    def __new__(cls, config: Mapping[str, Any], dry_run: bool = False) -> Core:
        """``dry_run``: decisions are recorded in memory and nothing is sent;
        the state_dir is not touched."""
    def topics(self) -> list[str]:
        """The bus topics to subscribe to (prefixes), from the config."""

    def handle(self, topic: str, envelope: Any) -> None:
        """Take one bus message and return at once; the work runs on the core's
        own threads. ``envelope`` is the fedmsg envelope ``{"msg", "msg_id", ...}``
        (any value is accepted: bad input is logged and dropped, never raised)."""

    def handle_recorded(self, topic: str, envelope: Any) -> None:
        """Like ``handle``, but return only once the state store has recorded
        the message (at once for one poormanci does not use), so that the
        caller may acknowledge it. Raises RuntimeError if poormanci stops first."""

    def explain(self, topic: str, envelope: Any) -> list[str]:
        """What ``handle`` would decide for this message, one line per decision,
        without doing anything (for ``poormanci replay --dry-run``)."""

    def wait_idle(self, timeout: float) -> bool:
        """Block until no task is due or running (retries waiting for later do
        not count); False if ``timeout`` seconds passed first."""

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking work, let requests in flight finish for up to ``timeout``
        seconds; what is left stays recorded for the next start. Releases the
        state_dir lock: a new Core may then use the same state_dir."""
