"""The ``poormanci`` command: check the config, replay bus messages, show the
state store, copy a SQLite state store into PostgreSQL.

Exit codes: 0 all is well, 1 a problem was found (reported on stdout/stderr),
2 the command line was wrong (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from poormanci.config import poormanci_keys

OK, PROBLEMS, USAGE = 0, 1, 2
STORE_FILE = "poormanci.sqlite3"  # inside state_dir (src/store.rs)

log = logging.getLogger("poormanci.cli")


class Problem(Exception):
    """Something to report on one line before exiting with status 1."""


# -- the fedmsg config --------------------------------------------------------

def hub_config_files() -> list[str]:
    """The files fedmsg-hub reads when given none (fedmsg.config._process_config_file),
    for messages only: loading itself is left to fedmsg."""
    import fedmsg.config

    singles = ["/etc/fedmsg-config.py", os.path.expanduser("~/.fedmsg-config.py"),
               os.getcwd() + "/fedmsg-config.py"]
    folders = ["/etc/fedmsg.d/", os.path.expanduser("~/.fedmsg.d/"), os.getcwd() + "/fedmsg.d/"]
    if "VIRTUAL_ENV" in os.environ:
        folders.append(os.path.join(os.environ["VIRTUAL_ENV"], "etc/fedmsg.d"))
    found = [f for d in folders for f in fedmsg.config._gather_configs_in(d)]
    return found + [f for f in singles if os.path.isfile(f)]


class Loaded(NamedTuple):
    config: dict  # has the poormanci.* keys
    files: list[str]
    amqp: dict | None  # the whole fedora-messaging config, when read from --toml


def load_config(args, *, as_hub: bool) -> Loaded:
    """The config from --toml, --config-dir or the hub's usual files.

    ``as_hub``: a fedmsg config with fedmsg's defaults and checks, exactly
    what fedmsg-hub gets; otherwise only the files (replay and status need
    only our keys, and should work from a folder holding just poormanci.py).
    """
    if getattr(args, "toml", None):
        return load_toml(args.toml)
    import fedmsg.config

    config_dir = args.config_dir
    if config_dir:
        if not os.path.isdir(config_dir):
            raise Problem(f"--config-dir {config_dir}: not a directory")
        files = fedmsg.config._gather_configs_in(config_dir)
        if not files:
            raise Problem(f"--config-dir {config_dir}: no *.py file in it")
    else:
        files = hub_config_files()
        if not files:
            raise Problem("no fedmsg config found (looked in /etc/fedmsg.d/, ~/.fedmsg.d/, ./fedmsg.d/ "
                          "and $VIRTUAL_ENV/etc/fedmsg.d/); use --config-dir DIR or --toml FILE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # load_config's own deprecation notice
            config = fedmsg.config.load_config(
                filenames=files if config_dir else None, invalidate_cache=True, disable_defaults=not as_hub)
    except Exception as e:  # the files are Python: anything can go wrong in them
        raise Problem(f"cannot load the fedmsg config: {_where(e, files)}{type(e).__name__}: {e}") from e
    return Loaded(config, files, None)


def load_toml(path: str) -> Loaded:
    """A fedora-messaging config, read and checked by fedora-messaging itself."""
    try:
        from fedora_messaging.config import LazyConfig
        from fedora_messaging.exceptions import ConfigurationException
    except ImportError as e:
        raise Problem(f"--toml needs fedora-messaging (pip install 'poormanci[amqp]'): {e}") from e
    if not os.path.isfile(path):
        raise Problem(f"--toml {path}: no such file")
    try:
        amqp = LazyConfig().load_config(config_path=path)
    except ConfigurationException as e:
        raise Problem(f"{path}: {e}") from e
    return Loaded(dict(amqp["consumer_config"]), [path], dict(amqp))


def _where(e: BaseException, files: list[str]) -> str:
    """'FILE:LINE: ' of the config file the exception came from, if any."""
    if isinstance(e, SyntaxError) and e.filename in files:
        return f"{e.filename}:{e.lineno}: "
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename in files]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def hub_problems(config: dict) -> list[str]:
    """fedmsg settings the core cannot see, with which fedmsg-hub would run
    without poormanci or fail on every message."""
    problems = []
    if "validate_signatures" not in config:
        problems.append("validate_signatures: missing (fedmsg's consumers fail on every message "
                        "without it; set it to False, or True with signing set up)")
    endpoints = [e for v in (config.get("endpoints") or {}).values() for e in v]
    endpoints += str(config.get("zmq_publish_endpoints") or "").split(",")
    if any("localhost" in e for e in endpoints):
        problems.append("endpoints: moksha refuses 'localhost' in an endpoint; write 127.0.0.1")
    return problems


def core_check(config: dict) -> dict:
    """The core's own check: {"problems", "warnings", "summary"}."""
    from poormanci._core import check_config

    return check_config(poormanci_keys(config))


def describe_store(config: dict) -> dict:
    """{"backend": "sqlite" or "postgresql", "name": "PostgreSQL host=... dbname=..."} (never a password)."""
    from poormanci._core import describe_store as describe

    return describe(poormanci_keys(config))


def checked_core_config(config: dict) -> dict:
    """The poormanci.* keys, once the core finds no problem in them (else
    each problem is printed and Problem raised)."""
    problems = core_check(config)["problems"]
    if problems:
        for line in problems:
            print(line)
        raise Problem(f"{len(problems)} problem(s) in the config (see poormanci check-config)")
    return poormanci_keys(config)


# -- check-config -------------------------------------------------------------

def unbound_topics(amqp: dict, topics: list[str]) -> list[str]:
    """The topic prefixes no binding routes to the queue (only the usual
    "prefix.#" and "#" keys are understood)."""
    keys = [k for b in amqp.get("bindings", []) for k in b.get("routing_keys", [])]
    return [t for t in topics
            if not any(k == "#" or (k.endswith(".#") and t.startswith(k[:-1])) for k in keys)]


def cmd_check_config(args) -> int:
    from poormanci._core import Core

    try:
        config, files, amqp = load_config(args, as_hub=True)
        problems = hub_problems(config) if amqp is None else []
    except Problem as e:
        if "No config value 'endpoints' found" not in str(e):
            raise
        # fedmsg gives up on the first missing key: say it, and check ours too.
        config, files, amqp = load_config(args, as_hub=False)
        problems = ["endpoints: missing (fedmsg-hub reads the bus from these: "
                    "{'NAME': ['tcp://HOST:PORT']})"] + hub_problems(config)
    checked = core_check(config)
    problems += checked["problems"]
    print("config files: " + ", ".join(files))
    for warning in checked["warnings"]:
        print(f"warning: {warning}")
    if problems:
        for line in problems:
            print(line)
        print(f"{len(problems)} problem(s): poormanci would not start with this config")
        return PROBLEMS
    try:
        core = Core(poormanci_keys(config), dry_run=True)
    except (ValueError, RuntimeError) as e:  # ConfigError is a ValueError
        raise Problem(str(e)) from e
    try:
        topics = core.topics()
    finally:
        core.close()
    print("OK")
    if amqp is None and config.get("poormanci.enabled") is not True:
        print("warning: poormanci.enabled is not True: fedmsg-hub will not run poormanci")
    summary = checked["summary"]
    projects = summary["projects"]
    print(f"projects ({len(projects)}):")
    for name, jobs in sorted(projects.items()):
        print(f"  {name}: {', '.join(describe_job(job) for job in jobs)}")
    print("topics handled:")
    for topic in topics:
        print(f"  {topic}")
    if amqp is not None:
        for topic in unbound_topics(amqp, topics):
            print(f"warning: no binding routes {topic}# to the queue: add that routing key")
    state_dir = config["poormanci.state_dir"]
    store = describe_store(config)
    if store["backend"] == "sqlite":
        has_store = (Path(state_dir) / STORE_FILE).exists()
        print(f"state_dir: {state_dir}" + ("" if has_store else " (no state store yet: made at first start)"))
    else:
        print(f"state_dir: {state_dir}")
    if args.offline:
        if store["backend"] == "postgresql":
            print(f"state store: {store['name']} (not checked: --offline)")
        print(describe_status_page(summary["web"]))
        return OK
    store_verdict = check_store(config)
    print(describe_status_page(summary["web"]))
    token_verdict = check_pagure_token(config)
    return PROBLEMS if PROBLEMS in (store_verdict, token_verdict) else OK


def check_store(config: dict) -> int:
    """Ask the PostgreSQL store whether this poormanci can use it (SQLite: nothing to ask)."""
    from poormanci._core import check_store as check

    verdict = check(poormanci_keys(config))
    if verdict["summary"]:
        print(verdict["summary"])
    for problem in verdict["problems"]:
        print(problem)
    if verdict["problems"]:
        print(f"{len(verdict['problems'])} problem(s) found by asking PostgreSQL: poormanci would not start")
        return PROBLEMS
    return OK


def check_pagure_token(config: dict) -> int:
    """Ask Pagure about the token and its ACLs; unreachable is a warning only."""
    from poormanci._core import check_pagure_token as check

    verdict = check(poormanci_keys(config))
    for warning in verdict["warnings"]:
        print(f"warning: {warning}")
    if verdict["summary"]:
        print(verdict["summary"])
    for problem in verdict["problems"]:
        print(problem)
    if verdict["problems"]:
        print(f"{len(verdict['problems'])} problem(s) found by asking Pagure: poormanci starts, "
              "but what it cannot deliver waits until they are fixed")
        return PROBLEMS
    return OK


def describe_status_page(web: dict) -> str:
    """`status page: http://127.0.0.1:8950/ (public at https://ci.example.org/poormanci; history 90 days)`."""
    if web["listen"] is None:
        return "status page: off (set poormanci.web.listen to serve it)"
    notes = [f"public at {web['public_url']}"] if web["public_url"] else ["no public_url: waiting flags link to Pagure and Jenkins"]
    notes.append(f"history {web['history_days']} days")
    return f"status page: http://{web['listen']}/ ({'; '.join(notes)})"


def describe_job(job: dict) -> str:
    """`folder/job (bus name folder; branches main, f4[0-9]; parameters PYTHON=3.12)`."""
    notes = []
    if job["display_name"] != job["job"]:
        notes.append(f"bus name {job['display_name']}")
    if job["branches"]:
        notes.append("branches " + ", ".join(job["branches"]))
    if job["parameters"]:
        notes.append("parameters " + " ".join(f"{k}={v}" for k, v in job["parameters"].items()))
    return job["job"] + (f" ({'; '.join(notes)})" if notes else "")


# -- replay -------------------------------------------------------------------

def read_envelopes(name: str) -> Iterator[tuple[str, Any, str | None]]:
    """(label, envelope, error) for each message of a file: the whole file is
    one JSON value, or else each non-empty line is one (JSON lines)."""
    label = "<stdin>" if name == "-" else name
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        yield label, None, f"cannot read: {e}"
        return
    try:
        yield label, json.loads(text), None
        return
    except ValueError as whole_error:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) <= 1:  # not JSON lines either: say why the file is not JSON
            yield label, None, f"not JSON: {whole_error}"
            return
    for n, line in lines:
        try:
            yield f"{label}:{n}", json.loads(line), None
        except ValueError as e:
            yield f"{label}:{n}", None, f"not JSON: {e}"


def cmd_replay(args) -> int:
    from poormanci._core import Core

    config = checked_core_config(load_config(args, as_hub=False).config)
    try:
        # A real Core takes the state_dir lock (SQLite): it fails here while a hub runs.
        core = Core(config, dry_run=args.dry_run)
    except RuntimeError as e:
        raise Problem(str(e)) from e
    bad = 0
    try:
        for name in args.files:
            for label, envelope, error in read_envelopes(name):
                if error is None and not (isinstance(envelope, dict) and isinstance(envelope.get("topic"), str)):
                    error = 'not a bus message: expected an envelope {"topic": "...", "msg": {...}, "msg_id": ...}'
                if error is not None:
                    bad += 1
                    print(f"{label}: error: {error}")
                    continue
                topic = envelope["topic"]
                print(f"{label}: {topic} (msg_id {envelope.get('msg_id', '-')})")
                try:
                    decisions = core.explain(topic, envelope)
                except RuntimeError as e:  # the engine is gone: nothing more can be done
                    raise Problem(str(e)) from e
                for line in decisions:
                    print(f"  {line}")
                # Also in a dry run: its decisions are recorded in memory, so the
                # one-build-per-commit rule holds across the messages replayed
                # (a push's updated message and its notification: one trigger).
                core.handle(topic, envelope)
        sys.stdout.flush()
        if not args.dry_run:
            if not core.wait_idle(args.wait):
                log.warning("still busy after %ss; the rest stays in the state store for the next start",
                            args.wait)
    finally:
        core.close()
    if not args.dry_run:
        print()
        print_status(read_configured_store(config))
    return PROBLEMS if bad else OK


# -- status -------------------------------------------------------------------

def read_store(state_dir: str) -> dict:
    """The status of the SQLite store in state_dir (--state-dir)."""
    from poormanci._core import read_status

    try:
        return read_status(state_dir)
    except RuntimeError as e:
        raise Problem(str(e)) from e


def read_configured_store(config: dict) -> dict:
    """The status of the store the (checked) poormanci.* keys name: SQLite or PostgreSQL."""
    from poormanci._core import read_status

    try:
        return read_status(config)
    except RuntimeError as e:
        raise Problem(str(e)) from e


def duration(seconds: float) -> str:
    """'1h 02m', '1m 05s', '12s'."""
    s = round(abs(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def _pr(item: dict) -> str:
    pr = item.get("pr")
    return f"{item.get('project') or '?'}#{'?' if pr is None else pr}"


def _table(rows: list[list[str]]) -> list[str]:
    """Rows as lines with aligned columns (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]) for row in rows]


def print_status(status: dict, now: float | None = None) -> None:
    now = time.time() if now is None else now
    runs, tasks = status.get("open_runs", []), status.get("tasks", [])
    print(f"state store: {status['store']}")
    if not runs and not tasks:
        print("nothing pending")
    if runs:
        print(f"open runs ({len(runs)}):")
        rows = [["PR", "JOB", "COMMIT", "STATE", "JENKINS", "CREATED"]]
        for run in runs:
            jenkins = (f"build #{run['build']}" if run.get("build") is not None
                       else f"queue item {run['queue_id']}" if run.get("queue_id") is not None else "-")
            rows.append([_pr(run), run["job"], (run.get("commit") or "?")[:10], run["state"], jenkins,
                         f"{duration(now - run['created'])} ago"])
        print("\n".join(_table(rows)))
    if tasks:
        print(f"tasks ({len(tasks)}):")
        rows, errors = [["KIND", "PR", "JOB", "FAILED ATTEMPTS", "NEXT TRY"]], [None]
        for task in tasks:
            wait = task["due"] - now  # of a claimed task: when its claim's lease ends
            if task.get("claimed_by"):
                when = "in progress" if wait > 0 else "now"
            else:
                when = (f"in {duration(wait)}" if wait >= 0.5 else "now" if wait > -0.5
                        else f"overdue by {duration(wait)}")
            rows.append([task["kind"], _pr(task), task.get("job") or "?", str(task["attempts"]), when])
            errors.append(task.get("last_error"))
        for line, error, task in zip(_table(rows), errors, [None, *tasks]):
            print(line)
            if task and task.get("claimed_by"):
                print(f"      {describe_claim(task, now)}")
            if task and task.get("waiting_for_token"):
                print("      waiting for a working Pagure token (refused with 401/403): "
                      "delivered once poormanci.pagure.token works")
            if error:
                print(f"      last error: {error}")
        held = sum(1 for task in tasks if task.get("waiting_for_token"))
        if held:
            print(f"{held} report(s) waiting for a working Pagure token: fix poormanci.pagure.token "
                  "(poormanci check-config says what is missing), then restart or wait for the next try")
    print(f"finished runs kept: {status.get('finished_runs', 0)}")


def describe_claim(task: dict, now: float) -> str:
    """Which instance is doing a task, and until when its claim holds."""
    left = task["due"] - now
    if left > 0:
        return f"claimed by {task['claimed_by']} (its lease ends in {duration(left)})"
    return (f"claimed by {task['claimed_by']}, whose lease ended {duration(left)} ago "
            "(that instance stopped?): the next instance to look takes it over")


def cmd_status(args) -> int:
    if args.state_dir:
        status = read_store(args.state_dir)
    else:
        status = read_configured_store(checked_core_config(load_config(args, as_hub=False).config))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print_status(status)
    return OK


# -- migrate-state --------------------------------------------------------------

def cmd_migrate_state(args) -> int:
    from poormanci._core import migrate_state

    config = checked_core_config(load_config(args, as_hub=False).config)
    state_dir = args.state_dir or config["poormanci.state_dir"]
    print(f"copying the SQLite state store in {state_dir} into {describe_store(config)['name']}")
    try:
        tables = migrate_state(config, state_dir)
    except RuntimeError as e:
        raise Problem(str(e)) from e
    rows = [["TABLE", "ROWS", "COPIED"]]
    rows += [[t["table"], str(t["rows"]), str(t["copied"])] for t in tables]
    print("\n".join(_table(rows)))
    skipped = sum(t["rows"] - t["copied"] for t in tables)
    if skipped:
        print(f"{skipped} row(s) not copied: their key was already there (msg_ids seen since, say)")
    print(f"done: start poormanci with this config; the SQLite store in {state_dir} is left as it was, "
          "and no longer read")
    return OK


# -- command line -------------------------------------------------------------

class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog):
        super().__init__(prog)
        # Column for help texts: argparse measures the command names without
        # their indent and would put each help on a line of its own.
        self._action_max_length = 18


def add_config_source(parser) -> None:
    parser.add_argument(
        "--config-dir", metavar="DIR",
        help="read only DIR/*.py instead of the files fedmsg-hub reads "
             "(/etc/fedmsg.d/*.py, ~/.fedmsg.d/*.py, ./fedmsg.d/*.py, $VIRTUAL_ENV/etc/fedmsg.d/*.py)")
    parser.add_argument(
        "--toml", metavar="FILE",
        help="read the [consumer_config] of this fedora-messaging config instead (poormanci on AMQP)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG instead of INFO (on stderr)")
    config_source = argparse.ArgumentParser(add_help=False)
    add_config_source(config_source.add_mutually_exclusive_group())

    parser = argparse.ArgumentParser(
        prog="poormanci", formatter_class=_Formatter,
        description="poormanci builds Pagure pull requests in Jenkins and reports back, driven by the "
                    "bus (fedmsg-hub or fedora-messaging). This command checks its config, replays "
                    "recorded bus messages, shows what is pending and moves the state into "
                    "PostgreSQL.",
        epilog="Exit status: 0 all is well, 1 problems found, 2 wrong command line. "
               "'poormanci COMMAND --help' describes each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    p = sub.add_parser(
        "check-config", parents=[common, config_source],
        help="check the config as fedmsg-hub (or fedora-messaging) loads it",
        description="Load the fedmsg config exactly as fedmsg-hub does (or, with --toml, the "
                    "fedora-messaging config as 'fedora-messaging consume' does) and report every "
                    "problem, one per line (exit 1), or OK with the projects, jobs, topics and "
                    "state_dir. Then, with a PostgreSQL state store, it connects and reads the "
                    "schema version (without changing anything), and it asks Pagure whose the token "
                    "is and whether it has the ACLs pull_request_flag and pull_request_comment on "
                    "every project (an unreachable Pagure is only a warning). Run it as the hub's user, from the hub's working "
                    "directory (./fedmsg.d counts).")
    p.add_argument("--offline", action="store_true",
                   help="check the files only: do not ask Pagure about the token, nor PostgreSQL "
                        "about the state store")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "replay", parents=[common, config_source], help="feed recorded bus messages through poormanci",
        description="Read bus messages (each FILE holds one fedmsg envelope {\"topic\", \"msg\", "
                    "\"msg_id\", ...}, or one per line; - is stdin) and print what poormanci decides "
                    "for each. Without --dry-run they are really handled: builds are triggered and "
                    "reported, using the state_dir (so not while fedmsg-hub runs poormanci with it), "
                    "and the state store is shown at the end.")
    p.add_argument("files", nargs="+", metavar="FILE", help="a JSON envelope, or JSON lines; - for stdin")
    p.add_argument("--dry-run", action="store_true",
                   help="only say what would be done: send nothing, leave the state store alone")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="without --dry-run: how long to let the work run before stopping (default 30); "
                        "what is not done stays in the state store")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "status", parents=[common], help="show what is pending in the state store",
        description="Show the state store the config names (SQLite in state_dir, or the PostgreSQL "
                    "database of poormanci.store): runs not finished (PR, job, commit, Jenkins queue "
                    "item or build) and deliveries waiting or retrying (triggers, flags, comments) with "
                    "their attempts, next try, last error and, on PostgreSQL, the instance doing them. "
                    "Read-only: safe while hubs run.")
    where = p.add_mutually_exclusive_group()
    add_config_source(where)
    where.add_argument("--state-dir", metavar="DIR",
                       help="read the SQLite store of this state_dir (default: the store the config names)")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "migrate-state", parents=[common, config_source],
        help="copy a SQLite state store into the PostgreSQL store the config names",
        description="Copy everything the SQLite state store holds (runs, tasks, approvals, msg_ids "
                    "seen, pull requests) into the PostgreSQL database named by poormanci.store, in "
                    "one transaction, ids kept, and print the rows copied per table. Stop the hub "
                    "that uses the state_dir first (its lock is taken for the copy). Refused when "
                    "the database already holds runs or tasks. The SQLite store is left as it was.")
    p.add_argument("--state-dir", metavar="DIR",
                   help="the state_dir holding the SQLite store (default: poormanci.state_dir from the config)")
    p.set_defaults(func=cmd_migrate_state)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("poormanci")
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Problem as e:
        sys.stdout.flush()
        print(f"poormanci {args.command}: {e}", file=sys.stderr)
        return PROBLEMS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
