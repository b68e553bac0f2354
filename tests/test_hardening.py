"""Small hardening points of issue 12: credentials in URLs, hub config keys
poormanci does not own, file modes, a damaged state store, Core.close().
(Redirects to another host: src/http.rs, redirects_are_followed_within_the_peer_only.)"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
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


