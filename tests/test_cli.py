"""The `poormanci` console script, run as a user runs it (a subprocess of the
venv's own script), on good and bad configs and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import free_port
import messages
from messages import FIXTURES

POORMANCI = Path(sys.prefix) / "bin" / "poormanci"
ROOT = Path(__file__).resolve().parents[1]
NEW_PR = FIXTURES / "prod2016.pagure.pull-request.new.pungi-235.json"
CLOSED_PR = FIXTURES / "prod2016.pagure.pull-request.closed.pungi-234.json"

# fedmsg keys the hub needs (see tests/harness.py): with these, check-config finds no hub problem.
BASE = {
    "topic_prefix": "org.fedoraproject", "environment": "prod", "zmq_enabled": True,
    "sign_messages": False, "validate_signatures": False,
    "endpoints": {"poormanci-tests.local": ["tcp://127.0.0.1:39960"]},
    "zmq_publish_endpoints": "tcp://127.0.0.1:39963",
}


def poormanci_config(state_dir, jenkins_url="http://127.0.0.1:9", **overrides) -> dict:
    config = {
        "poormanci.enabled": True,
        "poormanci.pagure": {"url": "https://pagure.io", "token": "PAGURE-TOKEN",
                             "topic": "io.pagure.prod.pagure", "timeout": 2},
        "poormanci.jenkins": {"url": jenkins_url, "timeout": 2, "poll_interval": 0.1},
        "poormanci.projects": {
            "pungi": [{"job": "pungi-pr", "token": "BEEFCAFE"}],
            "rpms/python-foo": [{"job": "folder/python-foo", "token": "F00", "display_name": "folder"}],
        },
        "poormanci.state_dir": str(state_dir),
    }
    config.update(overrides)
    return config


def write_confd(folder: Path, config: dict, base: dict | None = BASE) -> Path:
    """A fedmsg.d/ as fedmsg-hub reads it: each file's `config` dict is merged."""
    folder.mkdir(parents=True, exist_ok=True)
    if base is not None:
        (folder / "base.py").write_text(f"config = {base!r}\n")
    (folder / "poormanci.py").write_text(f"config = {config!r}\n")
    return folder


@pytest.fixture
def confd(tmp_path):
    return write_confd(tmp_path / "fedmsg.d", poormanci_config(tmp_path / "state"))


@pytest.fixture
def run(tmp_path):
    """run(*args, stdin=None) -> CompletedProcess of `poormanci ARGS`, from a
    folder with no fedmsg.d and a HOME of its own (fedmsg also reads
    ./fedmsg.d, ~/.fedmsg.d and $VIRTUAL_ENV/etc/fedmsg.d)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["HOME"] = str(home)

    def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([str(POORMANCI), *map(str, args)], cwd=home, env=env, input=stdin,
                           capture_output=True, text=True, timeout=60)
        print(f"$ poormanci {' '.join(map(str, args))}  -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        assert "Traceback" not in r.stderr
        return r

    return run


# -- the command line -----------------------------------------------------------

def test_help_lists_the_commands_and_usage_errors_exit_2(run):
    r = run("--help")
    assert r.returncode == 0
    for command in ("check-config", "replay", "status"):
        assert command in r.stdout
    assert run().returncode == 2  # no command
    assert run("replay").returncode == 2  # no FILE
    assert run("frobnicate").returncode == 2
    assert run("status", "--state-dir", "a", "--config-dir", "b").returncode == 2


# -- check-config ---------------------------------------------------------------

def test_check_config_ok_summarises_projects_jobs_and_topics(run, confd, tmp_path):
    r = run("check-config", "--offline", "--config-dir", confd)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert "OK" in lines
    assert "  pungi: pungi-pr" in lines
    assert "  rpms/python-foo: folder/python-foo (bus name folder)" in lines
    assert "  io.pagure.prod.pagure.pull-request." in lines
    assert "  org.fedoraproject.prod.jenkins.build." in lines
    assert any(line.startswith(f"state_dir: {tmp_path / 'state'}") for line in lines)
    assert "status page: off (set poormanci.web.listen to serve it)" in lines
    assert "warning" not in r.stdout
    assert not (tmp_path / "state").exists()  # checking touches no state


def test_check_config_prints_the_status_page_address(run, tmp_path):
    web = {"listen": "127.0.0.1:8950", "public_url": "https://ci.example.org/poormanci", "history_days": 30,
           "public_ur": "typo"}
    confd = write_confd(tmp_path / "fedmsg.d", poormanci_config(tmp_path / "state", **{"poormanci.web": web}))
    r = run("check-config", "--offline", "--config-dir", confd)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert "status page: http://127.0.0.1:8950/ (public at https://ci.example.org/poormanci; history 30 days)" in lines
    assert ("warning: poormanci.web.public_ur: unknown key, ignored; did you mean poormanci.web.public_url?"
            in lines)


def test_check_config_asks_pagure_about_the_token(run, tmp_path, pagure):
    for project in ("pungi", "rpms/python-foo"):
        pagure.add_project(project)
    pagure.add_token("COMMENT-ONLY-TOKEN", ["pull_request_comment"], user="cibot")

    def check(name, **pagure_keys):
        section = {"url": pagure.url, "token": pagure.token, "topic": "io.pagure.prod.pagure", "timeout": 2,
                   **pagure_keys}
        config = poormanci_config(tmp_path / "state", **{"poormanci.pagure": section})
        return run("check-config", "--config-dir", write_confd(tmp_path / name, config))

    r = check("good")
    assert r.returncode == 0, r.stdout
    assert "Pagure token of cibot: pull_request_flag and pull_request_comment on 2 project(s)" in r.stdout.splitlines()
    r = check("comment-only", token="COMMENT-ONLY-TOKEN")
    assert r.returncode == 1, r.stdout
    assert ("poormanci.pagure.token (user cibot): lacks the ACL pull_request_flag on pungi, rpms/python-foo;"
            in r.stdout), r.stdout
    assert "COMMENT-ONLY-TOKEN" not in r.stdout + r.stderr
    r = check("unknown", token="NOT-A-TOKEN")
    assert r.returncode == 1 and "poormanci.pagure.token: Pagure refuses it" in r.stdout, r.stdout
    r = check("down", url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert r.returncode == 0, r.stdout
    assert "warning: cannot check the Pagure token: " in r.stdout and "OK" in r.stdout.splitlines()


def test_check_config_reads_the_hubs_folders_without_config_dir(run, tmp_path):
    # ~/.fedmsg.d is one of the places fedmsg-hub reads.
    write_confd(tmp_path / "home" / ".fedmsg.d", poormanci_config(tmp_path / "state"))
    r = run("check-config", "--offline")
    assert r.returncode == 0
    assert str(tmp_path / "home" / ".fedmsg.d" / "poormanci.py") in r.stdout
    assert "OK" in r.stdout.splitlines()


def test_check_config_warns_when_not_enabled(run, tmp_path):
    config = poormanci_config(tmp_path / "state", **{"poormanci.enabled": False})
    confd = write_confd(tmp_path / "fedmsg.d", config)
    r = run("check-config", "--offline", "--config-dir", confd)
    assert r.returncode == 0
    assert "warning: poormanci.enabled is not True" in r.stdout


def test_check_config_reports_all_three_mistakes(run, tmp_path):
    config = poormanci_config(tmp_path / "state")
    del config["poormanci.pagure"]["token"]  # 1
    config["poormanci.jenkins"]["poll_interval"] = "fast"  # 2
    config["poormanci.projects"]["pungi"] = [{"token": "BEEFCAFE"}]  # 3: no job
    r = run("check-config", "--offline", "--config-dir", write_confd(tmp_path / "fedmsg.d", config))
    assert r.returncode == 1
    problems = [line for line in r.stdout.splitlines() if line.startswith("poormanci.")]
    assert len(problems) == 3, problems
    assert problems[0].startswith("poormanci.pagure.token: missing")
    assert problems[1].startswith("poormanci.jenkins.poll_interval: ")
    assert problems[2].startswith("poormanci.projects['pungi'][0].job: missing")
    assert "3 problem(s)" in r.stdout
    assert "OK" not in r.stdout.splitlines()


def test_check_config_reports_hub_traps(run, tmp_path):
    base = {k: v for k, v in BASE.items() if k != "validate_signatures"}
    base["endpoints"] = {"x": ["tcp://localhost:39960"]}
    r = run("check-config", "--offline", "--config-dir",
            write_confd(tmp_path / "fedmsg.d", poormanci_config(tmp_path / "state"), base))
    assert r.returncode == 1
    assert "validate_signatures: missing" in r.stdout
    assert "endpoints: moksha refuses 'localhost'" in r.stdout


def test_check_config_without_the_fedmsg_keys_reports_them_and_ours(run, tmp_path):
    config = poormanci_config(tmp_path / "state")
    del config["poormanci.state_dir"]
    r = run("check-config", "--offline", "--config-dir", write_confd(tmp_path / "fedmsg.d", config, base=None))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[1].startswith("endpoints: missing")
    assert lines[2].startswith("validate_signatures: missing")
    assert lines[3].startswith("poormanci.state_dir: missing")
    assert "3 problem(s)" in r.stdout


def test_check_config_names_a_broken_file(run, tmp_path):
    confd = write_confd(tmp_path / "fedmsg.d", poormanci_config(tmp_path / "state"))
    (confd / "zz-broken.py").write_text("config = {\n    'poormanci.enabled': True,\n")
    r = run("check-config", "--offline", "--config-dir", confd)
    assert r.returncode == 1
    assert f"{confd / 'zz-broken.py'}:1: SyntaxError" in r.stderr


def test_check_config_of_a_missing_folder(run, tmp_path):
    r = run("check-config", "--offline", "--config-dir", tmp_path / "nowhere")
    assert r.returncode == 1
    assert "not a directory" in r.stderr


def test_check_config_reads_the_fedora_messaging_example(run):
    r = run("check-config", "--offline", "--toml", ROOT / "fedora-messaging" / "poormanci.toml.example")
    assert r.returncode == 0
    assert "OK" in r.stdout.splitlines()
    assert "  pungi: pungi-pr" in r.stdout.splitlines()
    assert "warning" not in r.stdout


def test_check_config_toml_warns_about_a_missing_binding(run, tmp_path):
    text = (ROOT / "fedora-messaging" / "poormanci.toml.example").read_text()
    toml = tmp_path / "poormanci.toml"
    toml.write_text(text.replace('    "org.fedoraproject.prod.jenkins.build.#",\n', ""))
    r = run("check-config", "--offline", "--toml", toml)
    assert r.returncode == 0
    assert "warning: no binding routes org.fedoraproject.prod.jenkins.build.# to the queue" in r.stdout


# -- replay ---------------------------------------------------------------------

# What the core decides for each fixture with poormanci_config(): the verb
# and a piece of the reason. Files that are not envelopes are reported as such.
EXPECTED = {
    "constructed.jenkins.build_info.json": "error: not a bus message",
    "constructed.jenkins.queue_item.left.json": "error: not a bus message",
    "constructed.jenkins.job_builds.json": "error: not a bus message",
    "constructed.jenkins.queue.json": "error: not a bus message",
    "jenkins.build.start.1.json": "ignore: a build start is not a result",
    "prod2016.pagure.pull-request.new.pungi-235.json": "trigger pungi-pr for pungi#235",
    "prod2016.pagure.pull-request.closed.pungi-234.json": "ignore: pull-request.closed",
    "prod2016.pagure.pull-request.flag.added.poormanci.pungi-234.json": "ignore: ",
    "prod2016.pagure.pull-request.flag.added.poormanci.pungi-235.json": "ignore: ",
    "prod2016.pagure.pull-request.new.pungi-fedora-19.json": "ignore: project pungi-fedora is not configured",
    "pagure.pull-request.comment.edited.1.json": "ignore: project mdapi is not configured",
}
for _status in ("aborted", "failed", "notbuilt", "passed", "unstable"):
    EXPECTED[f"jenkins.build.{_status}.1.json"] = 'ignore: Jenkins job "fedora-mobile" is not configured'
for _name in ("closed.1-closed", "closed.2-merged", "comment.added.1", "flag.added.1", "flag.updated.1",
              "new.1", "rebased.1", "tag.added.1", "updated.1"):
    EXPECTED[f"pagure.pull-request.{_name}.json"] = "ignore: not a topic poormanci listens to"  # io.pagure.dev
for _name in ("human.pagure-843", "merged.pagure-848", "rebased-notification.pagure-843"):
    EXPECTED[f"prod2016.pagure.pull-request.comment.added.{_name}.json"] = \
        "ignore: project pagure is not configured"
EXPECTED["prod2016.pagure.pull-request.comment.added.no-comments.pungi-fedora-18.json"] = \
    "ignore: project pungi-fedora is not configured"


def replay_blocks(stdout: str) -> dict[str, list[str]]:
    """{label: [its header's rest, decision lines...]} from replay's output."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("  ") and current is not None:
            blocks[current].append(line.strip())
        elif ": " in line:
            current, rest = line.split(": ", 1)
            blocks[current] = [rest]
        else:
            current = None
    return blocks


def test_replay_dry_run_decides_for_every_fixture(run, confd, tmp_path):
    fixtures = sorted(FIXTURES.glob("*.json"))
    assert {f.name for f in fixtures} == set(EXPECTED), "a fixture was added: say what it should decide"
    r = run("replay", "--dry-run", "--config-dir", confd, *fixtures)
    blocks = replay_blocks(r.stdout)
    for f in fixtures:
        header, *decisions = blocks[str(f)]
        expected = EXPECTED[f.name]
        if expected.startswith("error: "):
            assert header.startswith(expected), (f.name, header)
            continue
        envelope = json.loads(f.read_text())
        assert header == f"{envelope['topic']} (msg_id {envelope['msg_id']})"
        assert len(decisions) == 1 and decisions[0].startswith(expected), (f.name, decisions)
    assert "REPO=https://pagure.io/forks/lsedlar/pungi.git BRANCH=lorax-dir BRANCH_TO=master" in r.stdout
    assert r.returncode == 1  # the two files that are not bus messages
    assert not (tmp_path / "state").exists()  # a dry run touches no state


def test_replay_dry_run_builds_a_push_once(run, confd, tmp_path):
    """A push is announced twice (pull-request.updated, then Pagure's
    notification comment): the dry run, like the hub, triggers once."""
    recorded = list(messages.recording())
    at = next(i for i, e in enumerate(recorded) if e["topic"].endswith(".pull-request.updated"))
    updated = recorded[at]
    notice = next(e for e in recorded[at:] if e["topic"].endswith(".pull-request.comment.added")
                  and e["msg"]["pullrequest"]["comments"][-1]["notification"])
    assert notice["msg"]["pullrequest"]["commit_stop"] == updated["msg"]["pullrequest"]["commit_stop"]
    push = tmp_path / "push.jsonl"
    push.write_text(json.dumps(updated) + "\n" + json.dumps(notice) + "\n")
    r = run("replay", "--dry-run", "--config-dir", confd, push)
    blocks = replay_blocks(r.stdout)
    assert blocks[f"{push}:1"][1:] == [line for line in blocks[f"{push}:1"][1:] if line.startswith("trigger pungi-pr for pungi#1 ")]
    assert len(blocks[f"{push}:1"]) == 2, r.stdout
    assert blocks[f"{push}:2"][1].startswith("ignore: ") and "already built" in blocks[f"{push}:2"][1], r.stdout
    assert r.returncode == 0
    assert not (tmp_path / "state").exists()


def test_replay_reports_malformed_input_and_goes_on(run, confd, tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not JSON\n")
    lines = tmp_path / "messages.jsonl"
    new_pr = json.loads(NEW_PR.read_text())
    lines.write_text("\n".join([
        json.dumps(new_pr),
        "{broken",
        json.dumps([new_pr]),
        json.dumps({"topic": new_pr["topic"], "msg": "a string", "msg_id": "2024-x"}),
        "",
    ]))
    r = run("replay", "--dry-run", "--config-dir", confd, garbage, lines, tmp_path / "missing.json")
    blocks = replay_blocks(r.stdout)
    assert blocks[str(garbage)][0].startswith("error: not JSON")
    assert blocks[f"{lines}:1"][1].startswith("trigger pungi-pr for pungi#235")
    assert blocks[f"{lines}:2"][0].startswith("error: not JSON")
    assert blocks[f"{lines}:3"][0].startswith("error: not a bus message")
    assert blocks[f"{lines}:4"][1].startswith("drop: malformed: msg")
    assert blocks[str(tmp_path / "missing.json")][0].startswith("error: cannot read")
    assert r.returncode == 1


def test_replay_reads_stdin(run, confd):
    r = run("replay", "--dry-run", "--config-dir", confd, "-", stdin=CLOSED_PR.read_text())
    assert r.returncode == 0
    assert replay_blocks(r.stdout)["<stdin>"][1].startswith("ignore: pull-request.closed")


def test_replay_with_a_bad_config_says_so(run, tmp_path):
    config = poormanci_config(tmp_path / "state")
    del config["poormanci.jenkins"]
    r = run("replay", "--dry-run", "--config-dir", write_confd(tmp_path / "fedmsg.d", config), NEW_PR)
    assert r.returncode == 1
    assert "poormanci.jenkins: missing" in r.stdout


# -- replay for real, and status ------------------------------------------------

def test_replay_keeps_a_failed_trigger_pending_and_status_shows_it(run, tmp_path, pagure):
    # The fixture's author is a committer of pungi on this Pagure: trusted, so built.
    pagure.add_project("pungi", commit=["lsedlar"])
    pagure.add_pr("pungi", 235, author="lsedlar", branch_from="lorax-dir")  # as the fixture tells it
    jenkins_down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    state = tmp_path / "state"
    config = poormanci_config(state, jenkins_down)
    config["poormanci.pagure"].update(url=pagure.url, token=pagure.token, user=pagure.user)
    confd = write_confd(tmp_path / "fedmsg.d", config)
    r = run("replay", "--wait", "20", "--config-dir", confd, NEW_PR)
    assert r.returncode == 0
    assert "trigger pungi-pr for pungi#235" in r.stdout
    # The summary after the replay: the run and its trigger, still to do.
    assert "open runs (1):" in r.stdout
    assert "tasks (1):" in r.stdout

    r = run("status", "--config-dir", confd)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    run_line = next(line for line in lines if "pungi#235" in line and "triggering" in line)
    assert "pungi-pr" in run_line
    task_line = next(line for line in lines if line.strip().startswith("trigger "))
    kind, pr, job, attempts = task_line.split()[:4]
    assert (kind, pr, job) == ("trigger", "pungi#235", "pungi-pr") and int(attempts) >= 1
    error_line = lines[lines.index(task_line) + 1]
    assert error_line.strip().startswith("last error: ")
    assert "refused" in error_line.lower()

    r = run("status", "--json", "--state-dir", state)
    assert r.returncode == 0
    status = json.loads(r.stdout)
    [task] = status["tasks"]
    assert (task["kind"], task["project"], task["pr"], task["job"]) == ("trigger", "pungi", 235, "pungi-pr")
    assert task["attempts"] >= 1 and "refused" in task["last_error"].lower()
    [open_run] = status["open_runs"]
    assert open_run["state"] == "triggering"


def test_replay_refuses_a_state_dir_in_use(run, tmp_path):
    from poormanci._core import Core

    state = tmp_path / "state"
    confd = write_confd(tmp_path / "fedmsg.d", poormanci_config(state))
    core = Core(poormanci_config(state))  # like a running hub: holds state_dir/lock
    try:
        r = run("replay", "--config-dir", confd, NEW_PR)
        assert r.returncode == 1
        assert "in use by another poormanci" in r.stderr
        # status only reads: fine while the "hub" runs
        assert run("status", "--config-dir", confd).returncode == 0
    finally:
        core.close()


def test_status_of_a_new_store_has_nothing_pending(run, tmp_path):
    from poormanci._core import Core

    state = tmp_path / "state"
    Core(poormanci_config(state)).close()  # makes the store, empty
    r = run("status", "--state-dir", state)
    assert r.returncode == 0
    assert "nothing pending" in r.stdout
    assert json.loads(run("status", "--json", "--state-dir", state).stdout) == {
        "backend": "sqlite", "open_runs": [], "tasks": [], "finished_runs": 0}


def test_status_without_a_store_is_a_clear_error(run, tmp_path):
    r = run("status", "--state-dir", tmp_path / "nothing-here")
    assert r.returncode == 1
    assert f"no state store in {tmp_path / 'nothing-here'}" in r.stderr
    config = poormanci_config(tmp_path / "state")
    del config["poormanci.state_dir"]
    r = run("status", "--config-dir", write_confd(tmp_path / "fedmsg.d", config))
    assert r.returncode == 1
    assert "poormanci.state_dir is not set" in r.stderr


def test_check_config_on_the_documented_project_form(run, tmp_path):
    config = poormanci_config(tmp_path / "state")
    config["poormanci.projects"]["pungi"] = {
        "jobs": [{"job": "pungi-pr", "token": "BEEFCAFE", "branches": ["main", "f4[0-9]"],
                  "parameters": {"PYTHON": "3.12"}}],
        "trusted": {"users": ["alice"], "groups": ["pungi-devs"]},
    }
    r = run("check-config", "--offline", "--config-dir", write_confd(tmp_path / "fedmsg.d", config))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "OK" in lines and "Traceback" not in r.stderr
    assert "  pungi: pungi-pr (branches main, f4[0-9]; parameters PYTHON=3.12)" in lines


def test_check_config_warns_about_unknown_keys_with_the_close_match(run, tmp_path):
    config = poormanci_config(tmp_path / "state")
    config["poormanci.jenkins"]["cancel_superseeded"] = False
    config["poormanci.statedir"] = "/tmp"
    r = run("check-config", "--offline", "--config-dir", write_confd(tmp_path / "fedmsg.d", config))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert ("warning: poormanci.jenkins.cancel_superseeded: unknown key, ignored; "
            "did you mean poormanci.jenkins.cancel_superseded?") in lines
    assert "warning: poormanci.statedir: unknown key, ignored; did you mean poormanci.state_dir?" in lines


def test_check_config_reads_the_fedmsg_example(run, tmp_path):
    confd = write_confd(tmp_path / "fedmsg.d", {})
    (confd / "poormanci.py").write_text((ROOT / "fedmsg.d" / "poormanci.example.py").read_text())
    r = run("check-config", "--offline", "--config-dir", confd)
    assert r.returncode == 0, r.stdout
    assert "  pungi: pungi-pr, pungi-py312 (branches main, f4[0-9]; parameters PYTHON=3.12)" in r.stdout.splitlines()
