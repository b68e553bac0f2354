"""Real Jenkins, as it really answers, through the real hub: one test per
point of "no early green, no forgotten build, the set-ups people really
have", and following per job rather than per build."""

import re
import time

import urllib.parse
import urllib.request

import pytest

import messages
from standins import FakeJenkins


def final_flags(pagure, project, pr_id):
    return [f for f in pagure.flags(project, pr_id) if f["status"] != "pending"]


def statuses_ever(pagure, pr_id):
    return [h["data"]["status"] for h in pagure.flag_history if h["id"] == pr_id]


def bot_comments(pagure, project, pr_id):
    return [c["comment"] for c in pagure.comments(project, pr_id) if c["user"]["name"] == "cibot"]


def log_lines(hub, pattern):
    return [line for line in hub.log_text().splitlines() if re.search(pattern, line)]


# 1 ------------------------------------------------------------------------
def test_a_result_shown_while_building_is_not_the_end(jenkins, pagure, make_config, hub_factory, wait_until):
    """SUCCESS while post-build steps still run, FAILURE in the end: the
    follow and the bus message sent inside that window both wait for the end."""
    jenkins.build_time, jenkins.result_window = 1.0, 2.0
    jenkins.next_result("pungi-pr", "SUCCESS")
    jenkins.next_post_build("pungi-pr", "FAILURE")
    pr = pagure.add_pr("pungi", 31)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if b["building"] and b["result"] == "SUCCESS"],
               message="SUCCESS while building")
    # jenkins-fedmsg-emit sends its message inside this window.
    hub.publish(jenkins.bus_message("pungi-pr", 1, "passed"))
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 31), timeout=20, message="the final flag")
    assert flag["status"] == "failure" and flag["comment"].startswith("Build 1 failed")
    (comment,) = wait_until(lambda: bot_comments(pagure, "pungi", 31), message="the comment")
    assert "failed" in comment and "successful" not in comment
    assert "success" not in statuses_ever(pagure, 31)


# 2 ------------------------------------------------------------------------
def queued_then_stopped(jenkins, pagure, make_config, hub_factory, pr_id: int):
    """A new PR of pungi triggered; the hub stopped once Jenkins queued it (item 1)."""
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pagure.add_pr("pungi", pr_id)))
    hub.wait_for_log(r"queued as queue item 1")
    hub.stop()
    return hub


def test_a_forgotten_queue_item_is_found_by_its_queue_id(jenkins, pagure, make_config, hub_factory, wait_until):
    """poormanci stopped while its item starts, leaves the queue and is
    forgotten, and Jenkins restarts too: started again, it finds the build."""
    jenkins.queue_delay, jenkins.build_time, jenkins.left_ttl = 2.0, 3.0, 0.5
    hub = queued_then_stopped(jenkins, pagure, make_config, hub_factory, 32)
    wait_until(lambda: jenkins.builds("pungi-pr") and jenkins.queue_item(1) is None, message="the item forgotten")
    jenkins.restart()
    hub.start()
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 32), timeout=20, message="the final flag")
    assert flag["status"] == "success" and flag["comment"].startswith("Build 1 successful")
    hub.wait_for_log(r"build #1 started \(found by its queue item\)")


def test_a_forgotten_queue_items_build_is_found_past_the_recent_builds(jenkins, pagure, make_config, hub_factory,
                                                                      wait_until):
    """As above, but 60 other builds of the job ran meanwhile (a burst): the
    build is no longer among the 50 a look reads, and is still found."""
    jenkins.queue_delay, jenkins.build_time, jenkins.left_ttl = 2.0, 0.5, 0.5
    hub = queued_then_stopped(jenkins, pagure, make_config, hub_factory, 34)
    for i in range(60):
        form = urllib.parse.urlencode({"token": "BEEFCAFE", "BRANCH": f"other-{i}"}).encode()
        urllib.request.urlopen(f"{jenkins.url}/job/pungi-pr/buildWithParameters", form, timeout=10).close()
    wait_until(lambda: len(jenkins.builds("pungi-pr")) == 61 and not any(b["building"] for b in jenkins.builds("pungi-pr"))
               and jenkins.queue_item(1) is None, timeout=30, message="61 builds done, the item forgotten")
    hub.start()
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 34), timeout=20, message="the final flag")
    assert flag["status"] == "success", flag
    hub.wait_for_log(r"build #\d+ started \(found by its queue item\)")


def test_a_build_truly_gone_is_an_error_that_says_so(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.queue_delay, jenkins.build_time, jenkins.left_ttl = 2.0, 1.0, 0.5
    hub = queued_then_stopped(jenkins, pagure, make_config, hub_factory, 33)
    wait_until(lambda: jenkins.builds("pungi-pr") and jenkins.queue_item(1) is None, message="the item forgotten")
    jenkins.delete_build("pungi-pr", 1)
    hub.start()
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 33), timeout=20, message="the final flag")
    assert flag["status"] == "error"
    assert "Jenkins forgot queue item 1 and no build among the last 1000 of job pungi-pr came from it" in flag["comment"]


# 3 ------------------------------------------------------------------------
@pytest.mark.parametrize("setup, says", [
    ({"disabled": True}, "job pungi-pr is disabled in Jenkins"),
    ({"params": None}, "job pungi-pr has no parameters"),
    ({"params": None, "old_jenkins": True}, "job pungi-pr has no parameters"),
])
def test_a_refusal_is_an_error_flag_at_once(jenkins, pagure, make_config, hub_factory, wait_until, setup, says):
    setup = dict(setup)
    if setup.pop("old_jenkins", False):
        jenkins.not_parameterized_status = 500  # IllegalStateException page
    jenkins.set_job("pungi-pr", **setup)
    pr = pagure.add_pr("pungi", 34)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    # Within seconds: retried, it would wait for retry_deadline (an hour).
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 34), timeout=10, message="the error flag")
    assert flag["status"] == "error" and says in flag["comment"]
    # One line for the operator (the INFO lines record the run's end).
    assert len(log_lines(hub, r" (ERROR|WARNING) .*" + says)) == 1, hub.log_tail()
    assert not log_lines(hub, r"trigger of run .* retrying")
    assert len([t for t in jenkins.requests if t.extra.get("kind") == "trigger"]) == 1


# 4 ------------------------------------------------------------------------
def _anonymous_without_read():
    return FakeJenkins({"pungi-pr": "BEEFCAFE"}, user="ci", api_token="11aa"), False


def _user_without_job_build():
    j = FakeJenkins({"pungi-pr": None}, user="ci", api_token="11aa")
    j.user_perms = {"read"}
    return j, True


@pytest.mark.parametrize("make_jenkins, token, fix", [
    (_anonymous_without_read, "BEEFCAFE", r"anonymous has no Overall/Read .* set poormanci.jenkins.trigger_route to \"buildByToken\""),
    (lambda: (FakeJenkins({"pungi-pr": "BEEFCAFE"}), False), "WRONG", r"Jenkins rejected the job token of pungi-pr: copy the job's"),
    (_user_without_job_build, "BEEFCAFE", r"ci lacks Job/Build on pungi-pr, .* set the job's \"Trigger builds remotely\" token"),
], ids=["anonymous-without-read", "wrong-token", "user-without-job-build"])
def test_each_403_names_its_fix(pagure, make_config, hub_factory, wait_until, make_jenkins, token, fix):
    jenkins, with_user = make_jenkins()
    with jenkins:
        config = make_config(jenkins, pagure, projects={"pungi": [{"job": "pungi-pr", "token": token}]})
        if not with_user:
            for key in ("user", "api_token"):
                config["poormanci.jenkins"].pop(key, None)
        pr = pagure.add_pr("pungi", 35)
        hub = hub_factory(config)
        hub.publish(messages.pr_new(pr))
        (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 35), timeout=10, message="the error flag")
        assert flag["status"] == "error"
        assert len(log_lines(hub, r" (ERROR|WARNING) .*failed for good: .*403.*" + fix)) == 1, hub.log_tail()
        assert "11aa" not in hub.log_text() and "BEEFCAFE" not in hub.log_text()


def test_a_stale_crumb_is_replaced_once(pagure, make_config, hub_factory, wait_until):
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, crumbs=True) as jenkins:
        hub = hub_factory(make_config(jenkins, pagure))
        hub.publish(messages.pr_new(pagure.add_pr("pungi", 36)))
        wait_until(lambda: final_flags(pagure, "pungi", 36), timeout=20, message="the first flag")
        jenkins.rotate_crumb()  # a new session: poormanci's crumb is stale
        hub.publish(messages.pr_new(pagure.add_pr("pungi", 37)))
        (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 37), timeout=20, message="the second flag")
        assert flag["status"] == "success"
        assert len(log_lines(hub, r"crumb refused, fetching a fresh one")) == 1


# 5 ------------------------------------------------------------------------
def test_build_by_token_with_a_read_only_user(pagure, make_config, hub_factory, wait_until):
    """Security on: anonymous may do nothing, poormanci's user may only read.
    The trigger goes through /buildByToken, the follow reads as that user."""
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, user="ci", api_token="11aa", crumbs=True) as jenkins:
        jenkins.user_perms = {"read"}
        jenkins.build_time = 1.0
        pr = pagure.add_pr("pungi", 38)
        hub = hub_factory(make_config(jenkins, pagure, jenkins={"trigger_route": "buildByToken"}))
        hub.publish(messages.pr_new(pr))
        (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 38), timeout=20, message="the final flag")
        assert flag["status"] == "success" and flag["comment"].startswith("Build 1 successful")
        (t,) = jenkins.triggers
        assert (t.route, t.cause) == ("buildByToken", f"{pr['full_url']} [poormanci run 1]")


# 6 ------------------------------------------------------------------------
def test_commit_is_sent_and_an_old_job_without_it_warns_once(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.set_job("pungi-pr", params={"REPO": "", "BRANCH": "", "BRANCH_TO": "master"})
    hub = hub_factory(make_config(jenkins, pagure))
    prs = [pagure.add_pr("pungi", n) for n in (39, 40)]
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    for pr in prs:
        (flag,) = wait_until(lambda: final_flags(pagure, "pungi", pr["id"]), timeout=20, message="a final flag")
        assert flag["status"] == "success"
    assert sorted(t.params["COMMIT"] for t in jenkins.triggers) == sorted(pr["commit_stop"] for pr in prs)
    # Jenkins dropped it: the builds ran without.
    assert all("COMMIT" not in b["actions"][0]["parameters"][i]["name"]
               for b in jenkins.builds("pungi-pr") for i in range(3))
    assert len(log_lines(hub, r" WARNING .*job pungi-pr does not define the COMMIT parameter")) == 1


# 7 ------------------------------------------------------------------------
def test_parameters_not_as_sent_are_an_error_never_a_success(jenkins, pagure, make_config, hub_factory, wait_until):
    """A job without REPO/BRANCH tests its default branch: its SUCCESS says
    nothing about the pull request."""
    jenkins.set_job("pungi-pr", params={"BRANCH_TO": "master", "COMMIT": ""})
    pr = pagure.add_pr("pungi", 41)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 41), timeout=20, message="the final flag")
    assert flag["status"] == "error"
    assert "job pungi-pr does not define REPO/BRANCH: it did not build this pull request" in flag["comment"]
    assert jenkins.builds("pungi-pr")[0]["result"] == "SUCCESS"
    assert "success" not in statuses_ever(pagure, 41)


# 8 ------------------------------------------------------------------------
def test_a_cancel_never_takes_a_newer_runs_merged_item(jenkins, pagure, make_config, hub_factory, wait_until):
    """Two PRs from the same branch at the same commit: Jenkins merges the
    second trigger into the first item (303). The first run's queue timeout
    then must not cancel the item the second run shares."""
    jenkins.queue_delay, jenkins.build_time = 3.8, 0.5
    first = pagure.add_pr("pungi", 42, branch_from="fix", commit="c0ffee" * 6 + "c0ff")
    hub = hub_factory(make_config(jenkins, pagure, jenkins={"queue_timeout": 3}))
    hub.publish(messages.pr_new(first))
    hub.wait_for_log(r"run 1 .*queued as queue item 1")
    # The second comes 1.5 s later: its own queue timeout falls after the start.
    wait_until(lambda: time.time() - jenkins.triggers[0].time >= 1.5, message="1.5 s after the first trigger")
    second = pagure.add_pr("pungi", 43, branch_from="fix", commit="c0ffee" * 6 + "c0ff")
    hub.publish(messages.pr_new(second))
    wait_until(lambda: len(jenkins.triggers) == 2, message="the second trigger")
    assert jenkins.triggers[1].merged and jenkins.triggers[1].queue_id == 1
    hub.wait_for_log(r"run 1 .*not cancelled in Jenkins: queue item 1 is also run 2's", timeout=10)
    # Pagure keeps flags per commit (both PRs show them): the second run's comes last.
    (flag,) = wait_until(lambda: [f for f in final_flags(pagure, "pungi", 43) if f["status"] == "success"],
                         timeout=20, message="the second run's success")
    assert flag["comment"].startswith("Build 1 successful")
    wait_until(lambda: any("did not start within 3 s" in c for c in bot_comments(pagure, "pungi", 42)),
               message="the first run's comment")
    assert not [r for r in jenkins.requests if r.extra.get("kind") == "cancel"]
    assert jenkins.builds("pungi-pr")[0]["result"] == "SUCCESS"
