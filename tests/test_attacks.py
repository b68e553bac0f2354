"""Attacks on the trust model, each through the real hub (issue 12): what a
bus message or a job token holder claims is not believed."""

import copy

import pytest
import requests

import messages

TRUST = {"users": ["alice"], "committers": True}


@pytest.fixture
def setup(jenkins, pagure, make_config, hub_factory):
    pagure.add_project("pungi", owner="ralph")

    def start(**overrides):
        overrides.setdefault("trusted", TRUST)
        return hub_factory(make_config(jenkins, pagure, **overrides))

    return start


def forge_build(jenkins, job: str, cause: str, **params) -> int:
    """What anyone holding the job's trigger token can do: start a build with
    any cause note and parameters. Returns its queue item id."""
    resp = requests.post(f"{jenkins.url}/job/{job}/buildWithParameters",
                         data={"token": jenkins.jobs[job], "cause": cause, **params}, timeout=5)
    assert resp.status_code == 201, resp.text
    return int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def finished_build(jenkins, job: str, queue_id: int, wait_until) -> int:
    def done():
        return [b["number"] for b in jenkins.builds(job) if b.get("queueId") == queue_id and not b["building"]]
    (number,) = wait_until(done, message="the forged build's end")
    return number


def later_pr_reported(hub, pagure, jenkins, wait_until, pr_id: int):
    """A trusted author's later PR, built and reported: everything published
    before it has been handled."""
    hub.publish(messages.pr_new(pagure.add_pr("pungi", pr_id, author="alice", branch_from=f"later-{pr_id}")))
    wait_until(lambda: [f for f in pagure.flags("pungi", pr_id) if f["status"] == "success"], message="the later PR's result")


def test_a_copied_cause_does_not_flag_a_pr_waiting_for_ok_to_test(setup, jenkins, pagure, wait_until):
    hub = setup()
    pr = pagure.add_pr("pungi", 40, author="mallory", branch_from="evil")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: [f for f in pagure.flags("pungi", 40) if "/ok-to-test" in f["comment"]], message="the gate")
    pr_url = f"{pagure.url}/pungi/pull-request/40"
    # The note poormanci would give run 1, with the PR's own parameters.
    item = forge_build(jenkins, "pungi-pr", f"{pr_url} [poormanci run 1]",
                       REPO=f"{pagure.url}/forks/mallory/pungi.git", BRANCH="evil", BRANCH_TO="master")
    number = finished_build(jenkins, "pungi-pr", item, wait_until)
    hub.publish(jenkins.bus_message_for("pungi-pr", number))
    later_pr_reported(hub, pagure, jenkins, wait_until, 41)
    assert {f["status"] for f in pagure.flags("pungi", 40)} == {"pending"}


def test_a_second_build_with_a_copied_cause_does_not_replace_the_real_one(setup, jenkins, pagure, wait_until):
    hub = setup()
    jenkins.queue_delay = 120  # the real build waits in the queue
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 42, author="alice", branch_from="real")))
    (real,) = wait_until(lambda: jenkins.triggers, message="the real trigger")
    jenkins.queue_delay = 0
    # Same note and parameters as the real trigger, another queue item.
    forged_params = {k: v for k, v in real.params.items() if k in ("REPO", "BRANCH", "BRANCH_TO")}
    item = forge_build(jenkins, "pungi-pr", real.cause, **{**forged_params, "COMMIT": "x"})
    assert item != real.queue_id
    number = finished_build(jenkins, "pungi-pr", item, wait_until)
    hub.publish(jenkins.bus_message_for("pungi-pr", number))
    later_pr_reported(hub, pagure, jenkins, wait_until, 43)
    assert {f["status"] for f in pagure.flags("pungi", 42)} == {"pending"}
    assert not [c for c in pagure.comments("pungi", 42) if f"#{number}" in c["comment"]]


def test_a_user_name_cannot_forge_a_log_line(setup, jenkins, pagure, wait_until):
    hub = setup()
    evil = "mallory\n2026-01-01 00:00:00,000 ERROR [poormanci] forged"
    pr = pagure.add_pr("pungi", 44, author="mallory")
    env = copy.deepcopy(messages.pr_new(pr))
    env["msg"]["pullrequest"]["user"]["name"] = evil
    hub.publish(env)
    hub.wait_for_log(r"pungi#44 by mallory\\n2026")
    later_pr_reported(hub, pagure, jenkins, wait_until, 45)
    assert not [line for line in hub.log_text().splitlines() if line.startswith("2026-01-01")]


def test_commands_in_code_blocks_and_floods(setup, jenkins, pagure, wait_until):
    hub = setup()
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 46, author="mallory")))
    wait_until(lambda: pagure.flags("pungi", 46), message="the gate")
    # A trusted person pastes a log that shows the command: not an approval.
    hub.publish(pagure.add_comment("pungi", 46, "The bot said:\n```\n/ok-to-test\n```\n~~~\n/retest\n~~~", "ralph"))
    # 5 000 commands in one comment (as much as a message carries): a
    # handful read, one line for the rest.
    flood = "\n".join(f"/test j{i}" for i in range(5000))
    mark = hub.log_mark()
    hub.publish(pagure.add_comment("pungi", 46, flood, "alice"))
    hub.wait_for_log(r"4995 more command\(s\) from alice ignored", since=mark)
    later_pr_reported(hub, pagure, jenkins, wait_until, 47)
    assert [t for t in jenkins.triggers if "/46 " in (t.cause or "")] == []
    # A line per command read (5), and the DEBUG line that lists them.
    assert len([ln for ln in hub.log_text(mark).splitlines() if '"j' in ln]) <= 6


def test_a_forged_message_for_an_unknown_pr_never_reaches_jenkins(setup, jenkins, pagure, wait_until):
    hub = setup()
    real = pagure.add_pr("pungi", 50, author="alice")
    forged = copy.deepcopy(messages.pr_new(real))
    forged["msg_id"] = messages.new_msg_id()
    pr = forged["msg"]["pullrequest"]
    pr["id"], pr["repo_from"], pr["remote_git"] = 999, None, "https://evil.example/payload.git"
    mark = hub.log_mark()
    hub.publish(forged)
    hub.wait_for_log(r"pungi#999: not built: Pagure did not show it", since=mark)
    later_pr_reported(hub, pagure, jenkins, wait_until, 51)
    assert [t.params["REPO"] for t in jenkins.triggers if "evil" in t.params["REPO"]] == []
    assert [t for t in jenkins.triggers if "/999 " in (t.cause or "")] == []


def test_a_forged_repository_for_a_real_pr_builds_pagures(setup, jenkins, pagure, wait_until):
    hub = setup()
    real = pagure.add_pr("pungi", 52, author="alice", branch_from="real-branch")
    forged = copy.deepcopy(messages.pr_new(real))
    pr = forged["msg"]["pullrequest"]
    pr["repo_from"], pr["remote_git"], pr["branch_from"] = None, "https://evil.example/payload.git", "evil"
    hub.publish(forged)
    (t,) = wait_until(lambda: jenkins.triggers, message="the build")
    assert (t.params["REPO"], t.params["BRANCH"]) == (f"{pagure.url}/forks/alice/pungi.git", "real-branch")
    wait_until(lambda: [f for f in pagure.flags("pungi", 52) if f["status"] == "success"], message="its result")


def test_a_forged_trusted_author_does_not_build(setup, jenkins, pagure, wait_until):
    hub = setup()
    real = pagure.add_pr("pungi", 53, author="mallory", fork_user="mallory")
    forged = copy.deepcopy(messages.pr_new(real))
    forged["msg"]["pullrequest"]["user"]["name"] = "alice"
    forged["msg"]["pullrequest"]["repo_from"]["user"]["name"] = "alice"
    mark = hub.log_mark()
    hub.publish(forged)
    hub.wait_for_log(r"pungi#53: not built: Pagure says mallory can push to it", since=mark)
    later_pr_reported(hub, pagure, jenkins, wait_until, 54)
    assert [t for t in jenkins.triggers if "/53 " in (t.cause or "")] == []


def test_a_trusted_authors_pr_from_an_untrusted_fork_waits(setup, jenkins, pagure, wait_until):
    hub = setup()
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 55, author="alice", fork_user="mallory")))
    wait_until(lambda: [f for f in pagure.flags("pungi", 55) if "/ok-to-test" in f["comment"]], message="the gate")
    later_pr_reported(hub, pagure, jenkins, wait_until, 56)
    assert [t for t in jenkins.triggers if "/55 " in (t.cause or "")] == []


def test_ok_to_test_approves_the_commit_the_approver_saw(setup, jenkins, pagure, wait_until):
    hub = setup()
    seen = pagure.add_pr("pungi", 57, author="mallory")
    hub.publish(messages.pr_new(seen))
    wait_until(lambda: pagure.flags("pungi", 57), message="the gate")
    # mallory pushes while ralph reads; ralph's comment is about what he saw.
    mark = hub.log_mark()
    for env in pagure.push("pungi", 57):
        hub.publish(env)
    hub.wait_for_log(r"pungi#57: the author is not trusted", since=mark)
    approval = messages.pr_comment(seen, "/ok-to-test", "ralph")
    mark = hub.log_mark()
    hub.publish(approval)
    hub.wait_for_log(rf"pungi#57: ralph approved {seen['commit_stop'][:8]}, not \w+: it stays waiting", since=mark)
    # Approved at the current head: that commit builds, once.
    hub.publish(pagure.add_comment("pungi", 57, "/ok-to-test", "ralph"))
    (t,) = wait_until(lambda: [t for t in jenkins.triggers if "/57 " in (t.cause or "")], message="the approved build")
    wait_until(lambda: [f for f in pagure.flags("pungi", 57) if f["status"] == "success"], message="its result")
    # The next push of an untrusted author waits again (approve: "commit").
    for env in pagure.push("pungi", 57):
        hub.publish(env)
    wait_until(lambda: any("/ok-to-test" in f["comment"] for f in pagure.flags("pungi", 57)), message="waiting again")
    later_pr_reported(hub, pagure, jenkins, wait_until, 58)
    assert len([t for t in jenkins.triggers if "/57 " in (t.cause or "")]) == 1


def test_approve_pull_request_lets_later_pushes_build(setup, jenkins, pagure, wait_until):
    hub = setup(approve="pull-request")
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 59, author="mallory")))
    wait_until(lambda: pagure.flags("pungi", 59), message="the gate")
    hub.publish(pagure.add_comment("pungi", 59, "/ok-to-test", "ralph"))
    wait_until(lambda: len(jenkins.triggers) == 1, message="the approved build")
    for env in pagure.push("pungi", 59):
        hub.publish(env)
    wait_until(lambda: len(jenkins.triggers) == 2, message="the next push's build, unasked")


def test_retest_on_a_never_approved_pr_builds_that_commit_once(setup, jenkins, pagure, wait_until):
    hub = setup()
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 60, author="mallory")))
    wait_until(lambda: pagure.flags("pungi", 60), message="the gate")
    head = pagure.pr("pungi", 60)["commit_stop"]
    hub.publish(pagure.add_comment("pungi", 60, "/retest", "ralph"))
    (t,) = wait_until(lambda: jenkins.triggers, message="the requested build")
    wait_until(lambda: [f for f in pagure.flags("pungi", 60) if f["status"] == "success"], message="its result")
    assert head[:8] in pagure.flags("pungi", 60)[0]["comment"]
    # Not an approval: mallory's next push waits.
    for env in pagure.push("pungi", 60):
        hub.publish(env)
    wait_until(lambda: any("/ok-to-test" in f["comment"] for f in pagure.flags("pungi", 60)), message="waiting again")
    later_pr_reported(hub, pagure, jenkins, wait_until, 61)
    assert len([t for t in jenkins.triggers if "/60 " in (t.cause or "")]) == 1
