"""Small hardening points of issue 12: credentials in URLs, hub config keys
poormanci does not own, file modes, a damaged state store, Core.close().
(Redirects to another host: src/http.rs, redirects_are_followed_within_the_peer_only.)"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import messages
from poormanci import Core

STORE = "poormanci.sqlite3"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def triggered(jenkins, pr_id: int) -> list:
    return [t for t in jenkins.triggers if t.cause and t.cause.split(" ")[0].endswith(f"/pull-request/{pr_id}")]


def test_credentials_in_a_url_are_one_clear_line_that_does_not_repeat_them(jenkins, pagure, make_config,
                                                                           hub_factory):
    config = make_config(jenkins, pagure)
    config["poormanci.jenkins"]["url"] = jenkins.url.replace("http://", "http://ci:JENKINS-SECRET-42@")
    config["poormanci.pagure"]["url"] = pagure.url.replace("http://", "http://PAGURE-SECRET-42@")
    hub = hub_factory(config, ready=False)
    line = hub.wait_for_log(r"ERROR poormanci .*poormanci is not started: .*").group(0)
    assert ("poormanci.jenkins.url: has credentials in it; put the user in poormanci.jenkins.user "
            "and the API token in poormanci.jenkins.api_token") in line
    assert "poormanci.pagure.url: has credentials in it; put the API token in poormanci.pagure.token" in line
    hub.wait_for_log(r"Running the MokshaHub reactor")
    assert hub.alive()
    assert "SECRET-42" not in hub.log_text()


# A fedmsg.d file of another consumer: values JSON has no word for.
OTHER_CONSUMER = '''
import datetime
import re


class Handler:
    pass


config = {
    "other.cache_ttl": datetime.timedelta(minutes=5),
    "other.ignore": re.compile(r"^test-"),
    "other.handler": Handler,
}
'''

# The same kinds of value under poormanci's own keys.
OURS_UNREADABLE = '''
import datetime
import re

config = {
    "poormanci.retry_deadline": datetime.timedelta(hours=1),
    "poormanci.commands": {"ok_to_test": re.compile("/ok-to-test")},
}
'''


def test_only_poormanci_keys_of_the_hub_config_are_read(jenkins, pagure, make_config, hub_factory, tmp_path,
                                                         wait_until):
    config = make_config(jenkins, pagure)
    workdir = tmp_path / "hub-other"
    (workdir / "fedmsg.d").mkdir(parents=True)
    (workdir / "fedmsg.d" / "other.py").write_text(OTHER_CONSUMER)
    hub = hub_factory(config, workdir=workdir)
    pr = pagure.add_pr("pungi", 1, author="alice")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: triggered(jenkins, 1), message="the PR's trigger")
    # check-config asks Pagure about the token on every configured project.
    pagure.add_project("python-foo", "rpms")
    checked = check_config(workdir / "fedmsg.d")
    assert checked.returncode == 0, checked.stdout

    # A poormanci.* key holding such a value: one line naming each key.
    workdir = tmp_path / "hub-ours"
    (workdir / "fedmsg.d").mkdir(parents=True)
    (workdir / "fedmsg.d" / "zz-ours.py").write_text(OURS_UNREADABLE)
    hub = hub_factory(make_config(jenkins, pagure, state_dir=tmp_path / "state2"), ready=False, workdir=workdir)
    line = hub.wait_for_log(r"ERROR poormanci .*poormanci is not started: .*").group(0)
    assert "poormanci.retry_deadline: a datetime.timedelta is not a config value" in line
    assert "poormanci.commands.ok_to_test: a re.Pattern is not a config value" in line
    hub.wait_for_log(r"Running the MokshaHub reactor")
    assert hub.alive() and "Traceback" not in hub.log_text()
    checked = check_config(workdir / "fedmsg.d")
    assert checked.returncode == 1
    assert any(line.startswith("poormanci.commands.ok_to_test: a re.Pattern is not a config value")
               for line in checked.stdout.splitlines()), checked.stdout


def check_config(confd: Path) -> subprocess.CompletedProcess:
    """``poormanci check-config --config-dir confd``, as an operator runs it."""
    return subprocess.run([str(Path(sys.prefix) / "bin" / "poormanci"), "check-config", "--config-dir", str(confd)],
                          capture_output=True, text=True, timeout=60)


def damage_a_page(db: Path, table: str):
    """Overwrite the root page of ``table`` with garbage (the store is closed)."""
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


@pytest.mark.sqlite_only("a damaged SQLite file is set aside")
def test_a_damaged_state_store_is_kept_aside_and_the_hub_goes_on(jenkins, pagure, make_config, hub_factory,
                                                                  tmp_path, wait_until):
    config = make_config(jenkins, pagure)
    state = Path(config["poormanci.state_dir"])
    state.mkdir()
    (state / STORE).write_bytes(b"not a database: a disk full of someone else's log\n" * 100)
    hub = hub_factory(config)
    hub.wait_for_log(r"ERROR poormanci .*state store .*poormanci\.sqlite3 is damaged \(.*\); kept aside as "
                     r".*poormanci\.sqlite3\.damaged-\d{8}T\d{6}\.\d{3}Z and started afresh")
    (aside,) = state.glob(f"{STORE}.damaged-*Z")
    assert aside.read_bytes().startswith(b"not a database")
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 1, author="alice")))
    wait_until(lambda: triggered(jenkins, 1), message="PR 1's trigger")

    # A real store with a damaged page: PRAGMA quick_check finds it at the next start.
    hub.stop()
    damage_a_page(state / STORE, "runs")
    mark = hub.log_mark()
    hub.start()
    hub.wait_for_log(r"ERROR poormanci .*state store .* is damaged \(quick_check: .*\); kept aside", since=mark)
    assert len(list(state.glob(f"{STORE}.damaged-*Z"))) == 2
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 2, author="alice")))
    wait_until(lambda: triggered(jenkins, 2), message="PR 2's trigger")
    assert hub.alive() and "Traceback" not in hub.log_text()


@pytest.fixture
def umask_zero():
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.sqlite_only("the modes of the SQLite file, its WAL and SHM")
def test_state_dir_is_0700_and_its_files_0600_whatever_the_umask(jenkins, pagure, make_config, tmp_path,
                                                                 umask_zero):
    config = make_config(jenkins, pagure, state_dir=tmp_path / "var" / "state")
    core = Core(config)
    try:
        state = tmp_path / "var" / "state"
        assert mode(state) == 0o700
        for name in [STORE, f"{STORE}-wal", f"{STORE}-shm", "lock"]:
            assert mode(state / name) == 0o600, name
    finally:
        core.close()
    # A state_dir the operator made is left as it is; files made 0644 by an older version are tightened.
    own = tmp_path / "own"
    own.mkdir(mode=0o750)
    os.chmod(own, 0o750)
    (own / "lock").touch(mode=0o644)
    core = Core(make_config(jenkins, pagure, state_dir=own))
    try:
        assert mode(own) == 0o750
        assert mode(own / "lock") == 0o600 and mode(own / STORE) == 0o600
    finally:
        core.close()


@pytest.mark.sqlite_only("the state_dir lock of the SQLite store")
def test_close_releases_the_state_dir_lock(jenkins, pagure, make_config):
    config = make_config(jenkins, pagure)
    first = Core(config)
    with pytest.raises(RuntimeError, match=re.escape("is in use by another poormanci")):
        Core(config)
    first.close()
    second = Core(config)  # `first` is still alive: only close() let go of the lock
    try:
        assert second.topics() == first.topics()
    finally:
        second.close()
