"""The report path through the real fedmsg-hub: a finished Jenkins build
becomes the flag (pending, then its result, one uid) and a comment."""

import re

import pytest
import requests

import messages

RESULTS = {  # Jenkins result -> (Pagure flag status, words in the flag)
    "SUCCESS": ("success", "successful"),
    "FAILURE": ("failure", "failed"),
    "UNSTABLE": ("failure", "unstable"),
    "ABORTED": ("canceled", "aborted"),
    "NOT_BUILT": ("error", "not built"),
}


def final_flags(pagure, project, pr_id):
    return [f for f in pagure.flags(project, pr_id) if f["status"] != "pending"]


def bus_only(jenkins, pagure, make_config, /, **kw):
    """A config where only Jenkins' bus message tells a build ended."""
    return make_config(jenkins, pagure, jenkins={"follow": False}, **kw)


def run_build(hub, jenkins, pagure, wait_until, project, pr, job):
    """Publish the new-PR message, wait for the build to end in Jenkins, publish its bus message."""
    hub.publish(messages.pr_new(pr))
    (t,) = wait_until(lambda: [t for t in jenkins.triggers if t.job == job and f"/{pr['id']} " in t.cause],
                      message="the trigger")
    number = wait_until(lambda: (jenkins.queue_item(t.queue_id).get("executable") or {}).get("number"),
                        message="the build to start")
    build = wait_until(lambda: not jenkins.build(job, number)["building"] and jenkins.build(job, number),
                       message="the build to end")
    wait_until(lambda: pagure.flags(project, pr["id"]), message="the pending flag")
    hub.publish(jenkins.bus_message_for(job, build["number"]))
    return build


@pytest.mark.parametrize("result", RESULTS)
def test_each_result_becomes_its_flag_and_a_comment(result, jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.next_result("pungi-pr", result)
    pr = pagure.add_pr("pungi", 149, author="alice")
    hub = hub_factory(bus_only(jenkins, pagure, make_config))
    build = run_build(hub, jenkins, pagure, wait_until, "pungi", pr, "pungi-pr")
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 149), message="the final flag")
    status, words = RESULTS[result]
    assert flag["status"] == status and flag["username"] == "Jenkins"
    assert flag["comment"] == f"Build {build['number']} {words} (commit {pr['commit_stop'][:8]})"
    assert flag["url"] == jenkins.build_url("pungi-pr", build["number"])
    assert flag["percent"] == (100 if result == "SUCCESS" else None)
    # One flag, pending first then updated in place (same uid).
    history = [(h["data"]["status"], h["uid"], h["message"]) for h in pagure.flag_history]
    assert history[0][0] == "pending" and history[-1][0] == status
    assert {uid for _, uid, _ in history} == {flag["uid"]} and len(flag["uid"]) <= 32
    assert history[-1][2] == "Flag updated"
    comment = wait_until(lambda: [c for c in pagure.comments("pungi", 149) if c["user"]["name"] == "cibot"],
                         message="the comment")[0]["comment"]
    assert words in comment and jenkins.build_url("pungi-pr", build["number"]) in comment
    # Pagure's markdown turns a bare "#N" into a link to issue or PR N of the project.
    texts = [h["data"]["comment"] for h in pagure.flag_history] + [comment]
    assert not [t for t in texts if re.search(r"#\d", t)], texts


def test_namespaced_project_is_reported(jenkins, pagure, make_config, hub_factory, wait_until):
    pr = pagure.add_pr("rpms/python-foo", 3, author="bob")
    hub = hub_factory(bus_only(jenkins, pagure, make_config))
    run_build(hub, jenkins, pagure, wait_until, "rpms/python-foo", pr, "folder/python-foo")
    (flag,) = wait_until(lambda: final_flags(pagure, "rpms/python-foo", 3), message="the final flag")
    assert flag["status"] == "success"


def test_flag_name_and_comments_off(jenkins, pagure, make_config, hub_factory, wait_until):
    first, second = pagure.add_pr("pungi", 4), pagure.add_pr("pungi", 5)
    hub = hub_factory(bus_only(jenkins, pagure, make_config, pagure={"flag_name": "CI", "comment": False}))
    run_build(hub, jenkins, pagure, wait_until, "pungi", first, "pungi-pr")
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 4), message="the final flag")
    assert flag["username"] == "CI"
    # A comment on the first PR would have gone out before the second PR's report.
    run_build(hub, jenkins, pagure, wait_until, "pungi", second, "pungi-pr")
    wait_until(lambda: final_flags(pagure, "pungi", 5), message="the second final flag")
    assert pagure.comments("pungi", 4) == []


def test_unknown_job_and_builds_poormanci_did_not_start(jenkins, pagure, make_config, hub_factory, wait_until,
                                                        explain):
    jenkins.queue_delay = 60  # poormanci's own build waits in the queue
    pagure.add_pr("pungi", 8)
    hub = hub_factory(bus_only(jenkins, pagure, make_config))
    unknown = jenkins.bus_message("some-other-job", 12, "passed")
    assert explain(unknown) == ['ignore: Jenkins job "some-other-job" is not configured']
    hub.publish(unknown)
    hub.publish(pagure.outbox[-1])
    wait_until(lambda: jenkins.triggers, message="poormanci's trigger")
    # Someone starts the job by hand (no poormanci cause) and it finishes first.
    jenkins.queue_delay = 0
    requests.post(f"{jenkins.job_url('pungi-pr')}buildWithParameters", data={"token": "BEEFCAFE", "REPO": "x"})
    manual = wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if not b["building"]], message="manual build")[0]
    hub.publish(jenkins.bus_message_for("pungi-pr", manual["number"]))
    hub.wait_for_log(rf"build #{manual['number']} of pungi-pr: not triggered by poormanci")
    assert final_flags(pagure, "pungi", 8) == []


def test_no_stale_green_when_the_pr_moved_on(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.build_time = 1.0
    pr = pagure.add_pr("pungi", 11)
    hub = hub_factory(bus_only(jenkins, pagure, make_config))
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: jenkins.triggers, message="the trigger")
    pagure.push("pungi", 11)  # a new commit whose messages are lost
    build = wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if not b["building"]], message="the build")[0]
    hub.publish(jenkins.bus_message_for("pungi-pr", build["number"]))
    comment = wait_until(lambda: [c for c in pagure.comments("pungi", 11) if c["user"]["name"] == "cibot"],
                         message="the comment")[0]["comment"]
    assert f"This result is for commit {pr['commit_stop'][:8]}; the pull request has moved on" in comment
    assert final_flags(pagure, "pungi", 11) == []  # the new head is not painted green


def test_own_echoes_are_ignored(jenkins, pagure, make_config, hub_factory, wait_until, explain):
    pr = pagure.add_pr("pungi", 12)
    config = bus_only(jenkins, pagure, make_config)
    hub = hub_factory(config)
    run_build(hub, jenkins, pagure, wait_until, "pungi", pr, "pungi-pr")
    wait_until(lambda: final_flags(pagure, "pungi", 12), message="the final flag")
    wait_until(lambda: pagure.comments("pungi", 12), message="the comment")
    echoes = [e for e in pagure.outbox if e["msg"].get("agent") == "cibot"]
    assert {e["topic"].rsplit(".", 2)[-2] + "." + e["topic"].rsplit(".", 1)[-1] for e in echoes} >= {
        "flag.added", "flag.updated", "comment.added"}
    for env in echoes:
        assert "echo of poormanci's own action" in explain(env, config)[0]
        hub.publish(env)
    # Handled in order: once a later PR's trigger arrived, the echoes were decided.
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 99, branch_from="after")))
    wait_until(lambda: len(jenkins.triggers) == 2, message="the later PR's trigger")
    assert [t.params["BRANCH"] for t in jenkins.triggers] == ["fix", "after"]


@pytest.mark.parametrize("case", ["bad token", "unknown PR"])
def test_pagure_errors_are_one_clear_line(case, jenkins, pagure, make_config, hub_factory, wait_until):
    pr = pagure.add_pr("pungi", 13)
    config = bus_only(jenkins, pagure, make_config)
    if case == "bad token":
        config["poormanci.pagure"]["token"] = "NOT-THE-TOKEN-42"
        # One line, and the flag is kept for a working token (tests/test_pagure.py).
        expected = (r"WARNING poormanci .*flag of run \d+ .*refused by Pagure: .*401 EINVALIDTOK: the Pagure token is "
                    r"invalid or lacks the pull_request_flag ACL.*kept until the token works")
    else:
        pr = dict(pr, id=404)  # a PR Pagure does not know: read before building, not built
        expected = r"WARNING poormanci .*pungi#404: not built: Pagure did not show it: .*404.*pull request"
    hub = hub_factory(config)
    hub.publish(messages.pr_new(pr))
    hub.wait_for_log(expected)
    assert hub.alive()
    assert "NOT-THE-TOKEN-42" not in hub.log_text()
    # One line for it; the start-up token check's own lines name a config key (tests/test_pagure.py).
    problems = re.compile(r"(ERROR|WARNING) poormanci \[[^]]*\] (?!poormanci\.)")
    assert len([line for line in hub.log_text().splitlines() if problems.search(line)]) == 1
