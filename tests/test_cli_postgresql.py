"""The `poormanci` command on a PostgreSQL state store: status, check-config
and migrate-state, run as a user runs them, against the session's private
PostgreSQL (the ``postgresql`` fixture, tests/postgres.py; skipped with the
reason where there is none) and state made by the real core. They choose
their store themselves, so they run in the SQLite pass."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

import pytest

import harness
import messages
import postgres
from harness import free_port, wait_until
from test_cli import NEW_PR, ROOT, run, write_confd  # noqa: F401 (run is a fixture)

TABLES = ["seen", "runs", "tasks", "approvals", "pull_requests"]


def pg_config(jenkins, pagure, server, state_dir, /, **overrides) -> dict:
    """A config for the stand-ins with the PostgreSQL store of ``state_dir``
    (a database of its own)."""
    return harness.make_config(jenkins, pagure, state_dir=state_dir,
                               store=server.store_config(postgres.database_for(state_dir)),
                               **overrides)


def database(config: dict) -> str:
    return dict(kv.split("=", 1) for kv in config["poormanci.store"]["dsn"].split())["dbname"]


def where(server, config: dict) -> str:
    """How the commands name the store: never with the password."""
    return f"PostgreSQL host=127.0.0.1 port={server.port} dbname={database(config)} user={postgres.ROLE}"


def secret(server) -> str:
    return Path(server.password_file).read_text().strip()


def without_where(status: dict) -> dict:
    """A status without the store's name; tasks due at once in id order (the
    order of ties differs between SQLite and PostgreSQL)."""
    status = {k: v for k, v in status.items() if k not in ("backend", "store")}
    status["tasks"] = sorted(status["tasks"], key=lambda t: (t["due"], t["id"]))
    return status


def sqlite_counts(state_dir: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{state_dir / 'poormanci.sqlite3'}?mode=ro", uri=True) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def copied_counts(stdout: str) -> dict[str, tuple[int, int]]:
    """{table: (rows, copied)} from migrate-state's table."""
    counts = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in TABLES:
            counts[parts[0]] = (int(parts[1]), int(parts[2]))
    return counts


# -- status -----------------------------------------------------------------------

def test_status_reads_postgresql_and_names_the_instance_doing_a_task(run, tmp_path, jenkins, pagure, postgresql):
    from poormanci._core import Core, read_status

    pagure.add_project("pungi", commit=["lsedlar"])
    pagure.add_pr("pungi", 235, author="lsedlar", branch_from="lorax-dir")  # as the fixture tells it
    jenkins.slow = 60  # the trigger stays in flight: claimed by the instance sending it
    config = pg_config(jenkins, pagure, postgresql, tmp_path / "state")
    confd = write_confd(tmp_path / "fedmsg.d", config)
    r = run("status", "--config-dir", confd)
    assert r.returncode == 1
    assert f"no state store in {where(postgresql, config)} yet" in r.stderr

    core = Core(config)
    try:
        envelope = json.loads(NEW_PR.read_text())
        core.handle(envelope["topic"], envelope)
        status = wait_until(lambda: (s := read_status(config))["tasks"] and s["tasks"][0]["claimed_by"] and s,
                            timeout=20, message="the trigger, claimed")
        [task] = status["tasks"]
        assert task["claimed_by"].startswith(f"{socket.gethostname()}:{os.getpid()}:")
        assert status["backend"] == "postgresql" and status["store"] == where(postgresql, config)

        r = run("status", "--config-dir", confd)
        assert r.returncode == 0
        lines = r.stdout.splitlines()
        assert lines[0] == f"state store: {where(postgresql, config)}"
        assert "open runs (1):" in lines
        assert next(line for line in lines if "pungi#235" in line and "pungi-pr" in line and "triggering" in line)
        task_line = next(line for line in lines if line.strip().startswith("trigger "))
        assert task_line.split()[:4] == ["trigger", "pungi#235", "pungi-pr", "0"]
        assert task_line.endswith("in progress")
        claim = lines[lines.index(task_line) + 1].strip()
        assert claim.startswith(f"claimed by {task['claimed_by']} (its lease ends in "), claim
        assert secret(postgresql) not in r.stdout + r.stderr

        r = run("status", "--json", "--config-dir", confd)
        assert r.returncode == 0
        assert json.loads(r.stdout)["tasks"][0]["claimed_by"] == task["claimed_by"]
    finally:
        core.close(timeout=0.5)


# -- check-config -------------------------------------------------------------------

def check_config(run, tmp_path, name: str, config: dict, *args) -> tuple[int, list[str], str]:
    r = run("check-config", *args, "--config-dir", write_confd(tmp_path / name, config))
    assert "Traceback" not in r.stderr
    return r.returncode, r.stdout.splitlines(), r.stdout + r.stderr


def test_check_config_reads_the_schema_version_and_changes_nothing(run, tmp_path, jenkins, pagure, postgresql):
    from poormanci._core import Core

    pagure.add_project("pungi")
    pagure.add_project("rpms/python-foo")
    config = pg_config(jenkins, pagure, postgresql, tmp_path / "state")
    store = where(postgresql, config)
    code, lines, _ = check_config(run, tmp_path, "empty", config)
    assert code == 0, lines
    assert f"state store: {store}: empty: poormanci makes its tables at first start" in lines
    assert "OK" in lines
    # Read only: still empty.
    assert postgresql.psql("SELECT to_regclass('schema_version') IS NULL", database(config)).strip() == "t"

    Core(config).close()  # the first start makes the schema
    code, lines, _ = check_config(run, tmp_path, "made", config)
    assert code == 0, lines
    assert f"state store: {store}: schema version 2 (this poormanci writes 2)" in lines

    postgresql.psql("UPDATE schema_version SET version = 99", database(config))
    code, lines, _ = check_config(run, tmp_path, "newer", config)
    assert code == 1, lines
    assert [line for line in lines if line.startswith("poormanci.store: ")] == [
        f"poormanci.store: {store}: its schema is version 99, written by a newer poormanci "
        "(this one writes 2): upgrade this poormanci"]
    assert "1 problem(s) found by asking PostgreSQL: poormanci would not start" in lines
    assert postgresql.psql("SELECT version FROM schema_version", database(config)).strip() == "99"


def test_check_config_says_why_it_cannot_connect_on_one_line(run, tmp_path, jenkins, pagure, postgresql):
    pagure.add_project("pungi")
    pagure.add_project("rpms/python-foo")
    good = pg_config(jenkins, pagure, postgresql, tmp_path / "state")
    store = where(postgresql, good)
    wrong = tmp_path / "wrong-password.txt"
    wrong.write_text("not-the-password-4f1c\n")
    port = free_port()  # nothing listens there
    down = store.replace(f"port={postgresql.port}", f"port={port}")
    cases = {
        "wrong-password": ({"password_file": str(wrong)}, store,
                           f'PostgreSQL: password authentication failed for user "{postgres.ROLE}"'),
        "no-password-file": ({"password_file": str(tmp_path / "missing")}, store,
                             f"poormanci.store.password_file {tmp_path / 'missing'}: No such file or directory"),
        "server-down": ({"dsn": good["poormanci.store"]["dsn"].replace(f"port={postgresql.port}", f"port={port}")},
                        down, "PostgreSQL: error connecting to server: Connection refused"),
    }
    for name, (change, place, why) in cases.items():
        expected = f"poormanci.store: cannot connect to {place}: {why}"
        config = {**good, "poormanci.store": {**good["poormanci.store"], **change}}
        code, lines, everything = check_config(run, tmp_path, name, config)
        assert code == 1, (name, lines)
        problems = [line for line in lines if line.startswith("poormanci.store")]
        assert len(problems) == 1 and problems[0].startswith(expected), (name, problems)
        assert "1 problem(s) found by asking PostgreSQL" in everything
        assert secret(postgresql) not in everything and "not-the-password-4f1c" not in everything
        # --offline asks nobody, as for Pagure.
        code, lines, _ = check_config(run, tmp_path, f"{name}-offline", config, "--offline")
        assert code == 0, (name, lines)
        assert f"state store: {place} (not checked: --offline)" in lines, lines


def test_check_config_on_an_empty_database_poormanci_could_not_use(run, tmp_path, jenkins, pagure, postgresql):
    pagure.add_project("pungi")
    pagure.add_project("rpms/python-foo")
    config = pg_config(jenkins, pagure, postgresql, tmp_path / "state")
    if int(postgresql.psql("SHOW server_version_num")) < 150000:
        pytest.skip("before PostgreSQL 15 every role may create tables in public")
    # A database that is not poormanci's role's own: PostgreSQL 15 gives it no CREATE on public.
    postgresql.psql("CREATE DATABASE not_ours")
    config["poormanci.store"]["dsn"] = config["poormanci.store"]["dsn"].replace(database(config), "not_ours")
    code, lines, _ = check_config(run, tmp_path, "not-ours", config)
    assert code == 1, lines
    [problem] = [line for line in lines if line.startswith("poormanci.store: ")]
    assert problem.endswith(f"is empty, and poormanci could not make its tables there: user {postgres.ROLE} may "
                            f"not create tables in schema public; make the database {postgres.ROLE}'s (CREATE "
                            f"DATABASE … OWNER {postgres.ROLE}) or GRANT CREATE ON SCHEMA public TO "
                            f"{postgres.ROLE}"), problem
    # Another application's tables of the same names.
    config = pg_config(jenkins, pagure, postgresql, tmp_path / "state2")
    postgresql.psql("CREATE TABLE runs (id integer)", database(config))
    code, lines, _ = check_config(run, tmp_path, "taken", config)
    assert code == 1, lines
    [problem] = [line for line in lines if line.startswith("poormanci.store: ")]
    assert "it already has tables named runs that poormanci did not make" in problem, problem


# -- migrate-state ------------------------------------------------------------------

def test_migrate_state_copies_a_store_made_by_the_core(run, tmp_path, jenkins, pagure, postgresql):
    from poormanci._core import Core, read_status

    state = tmp_path / "state"
    jenkins_down = {"url": f"http://127.0.0.1:{free_port()}"}  # nothing listens: triggers wait, retried
    sqlite_config = harness.make_config(jenkins, pagure, state_dir=state, jenkins=jenkins_down)
    config = pg_config(jenkins, pagure, postgresql, state, jenkins=jenkins_down)
    confd = write_confd(tmp_path / "fedmsg.d", config)

    # One instance on SQLite: an approved PR of an untrusted author, a trusted author's PR.
    core = Core(sqlite_config)
    try:
        untrusted = pagure.add_pr("pungi", 30, author="mallory")
        core.handle_recorded(*topic_and(messages.pr_new(untrusted)))
        core.handle_recorded(*topic_and(pagure.add_comment("pungi", 30, "/ok-to-test", "alice")))
        core.handle_recorded(*topic_and(messages.pr_new(pagure.add_pr("pungi", 31, author="bob"))))
        def both_triggers_tried():
            tasks = read_status(state)["tasks"]
            return (sorted((t["kind"], t["pr"]) for t in tasks if t["attempts"]) == [("trigger", 30), ("trigger", 31)]
                    and len(tasks) == 2 and sqlite_counts(state)["approvals"] == 1)

        wait_until(both_triggers_tried, timeout=30, message="both triggers tried (Jenkins is down), and the approval")
        # A hub holds the state_dir: no copy.
        r = run("migrate-state", "--config-dir", confd)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [
            f"poormanci migrate-state: state_dir {state} is in use by another poormanci (a running hub?); "
            "stop it or use another state_dir"]
    finally:
        core.close()
    r = run("status", "--config-dir", confd)
    assert r.returncode == 1 and "no state store in PostgreSQL" in r.stderr  # nothing was written

    before = sqlite_counts(state)
    # seen: the 3 msg_ids, and "gate:pungi#30" if the notice for mallory's PR went out before alice's approval.
    assert before["runs"] == 2 and before["tasks"] == 2 and before["approvals"] == 1 and before["seen"] >= 3
    r = run("migrate-state", "--config-dir", confd)
    assert r.returncode == 0, r.stderr
    assert f"copying the SQLite state store in {state} into {where(postgresql, config)}" in r.stdout
    assert copied_counts(r.stdout) == {t: (n, n) for t, n in before.items()}
    assert secret(postgresql) not in r.stdout + r.stderr

    # The same open runs and tasks, ids and all, on PostgreSQL.
    on_sqlite = json.loads(run("status", "--json", "--state-dir", state).stdout)
    r = run("status", "--json", "--config-dir", confd)
    assert r.returncode == 0
    on_postgresql = json.loads(r.stdout)
    assert on_postgresql["backend"] == "postgresql"
    assert without_where(on_postgresql) == without_where(on_sqlite)
    assert {(run_["pr"], run_["state"]) for run_ in on_postgresql["open_runs"]} == {(30, "triggering"),
                                                                                   (31, "triggering")}
    text = run("status", "--config-dir", confd).stdout
    assert "open runs (2):" in text and "tasks (2):" in text

    # Once is enough: the database holds runs now.
    r = run("migrate-state", "--config-dir", confd)
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"poormanci migrate-state: nothing copied into {where(postgresql, config)}: "
                           f"{where(postgresql, config)} already holds 2 run(s) and 2 task(s)"), line

    # An instance on PostgreSQL goes on from there: a new PR gets an id after the copied ones.
    core = Core(config)
    try:
        core.handle_recorded(*topic_and(messages.pr_new(pagure.add_pr("pungi", 32, author="carol"))))
        status = wait_until(lambda: (s := read_status(config)) and len(s["open_runs"]) == 3 and s,
                            timeout=20, message="PR 32's run")
    finally:
        core.close()
    new = next(r for r in status["open_runs"] if r["pr"] == 32)
    assert new["id"] > max(r["id"] for r in on_sqlite["open_runs"])


def topic_and(envelope: dict) -> tuple[str, dict]:
    return envelope["topic"], envelope


def test_migrate_state_brings_an_old_store_up_to_date_first(run, tmp_path, jenkins, pagure, postgresql):
    """A store release 0.1.0 wrote (no schema version, columns missing) is
    brought up to date by opening it, then copied whole."""
    state = tmp_path / "old-state"
    state.mkdir()
    shutil.copy(ROOT / "src" / "testdata" / "state-0.1.0.sqlite3", state / "poormanci.sqlite3")
    config = pg_config(jenkins, pagure, postgresql, tmp_path / "state")  # its state_dir is not the one copied
    confd = write_confd(tmp_path / "fedmsg.d", config)
    r = run("migrate-state", "--config-dir", confd, "--state-dir", state)
    assert r.returncode == 0, r.stderr
    counts = copied_counts(r.stdout)
    assert counts == {t: (n, n) for t, n in sqlite_counts(state).items()}
    assert counts["runs"] == (10, 10) and counts["tasks"] == (16, 16)
    on_sqlite = json.loads(run("status", "--json", "--state-dir", state).stdout)
    on_postgresql = json.loads(run("status", "--json", "--config-dir", confd).stdout)
    assert on_sqlite["tasks"] and without_where(on_postgresql) == without_where(on_sqlite)


def test_migrate_state_needs_a_postgresql_store_and_a_sqlite_one(run, tmp_path, jenkins, pagure, postgresql):
    sqlite_config = harness.make_config(jenkins, pagure, state_dir=tmp_path / "state")
    r = run("migrate-state", "--config-dir", write_confd(tmp_path / "sqlite.d", sqlite_config))
    assert r.returncode == 1
    assert "the config names no PostgreSQL database to copy into" in r.stderr
    config = pg_config(jenkins, pagure, postgresql, tmp_path / "state")
    r = run("migrate-state", "--config-dir", write_confd(tmp_path / "pg.d", config))
    assert r.returncode == 1
    assert f"no state store in {tmp_path / 'state'}" in r.stderr
    assert not (tmp_path / "state").exists()
