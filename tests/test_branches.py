"""Per-job branch filters and static parameters, end to end through the real
fedmsg-hub: a job with ``branches`` builds only PRs into a matching target
branch, on every path (new PR, push, /retest, /test), and its ``parameters``
travel with each trigger."""

import re

import pytest

import messages
from harness import decided
from standins import FakeJenkins
from standins.jenkins import DEFAULT_PARAMS

JOBS = {"pungi-pr": "BEEFCAFE", "pungi-docs": "D0C5"}
PROJECTS = {"pungi": [
    {"job": "pungi-pr", "token": "BEEFCAFE", "branches": ["main", "f4[0-9]"], "parameters": {"PYTHON": "3.12"}},
    {"job": "pungi-docs", "token": "D0C5"},
]}


@pytest.fixture
def jenkins2():
    with FakeJenkins(JOBS) as server:
        # The job defines PYTHON (else Jenkins drops it and the run is an error).
        server.set_job("pungi-pr", params={**DEFAULT_PARAMS, "PYTHON": "3.11"})
        yield server


def triggers_of(jenkins, pr_id):
    return [t for t in jenkins.triggers if t.cause and t.cause.split(" ")[0].endswith(f"/pull-request/{pr_id}")]


def results(pagure, pr_id):
    return [c for c in pagure.comments("pungi", pr_id) if c["user"]["name"] == pagure.user]


def finished(pagure, pr_id, n):
    flags = pagure.flags("pungi", pr_id)
    return len(flags) == n and all(f["status"] == "success" for f in flags)


def test_a_job_builds_only_prs_into_its_branches_with_its_parameters(jenkins2, pagure, make_config, hub_factory, wait_until):
    hub = hub_factory(make_config(jenkins2, pagure, projects=PROJECTS))
    into_f41 = pagure.add_pr("pungi", 1, author="alice", branch="f41")
    into_f410 = pagure.add_pr("pungi", 2, author="alice", branch="f410")
    hub.publish(messages.pr_new(into_f41))
    new_f410 = messages.pr_new(into_f410)
    hub.publish(new_f410)
    wait_until(lambda: finished(pagure, 1, 2) and finished(pagure, 2, 1), message="the results of both PRs")
    by_job = {t.job: t for t in triggers_of(jenkins2, 1)}
    assert sorted(by_job) == ["pungi-docs", "pungi-pr"]
    assert by_job["pungi-pr"].params == {"REPO": f"{pagure.url}/forks/alice/pungi.git", "BRANCH": "fix",
                                         "BRANCH_TO": "f41", "COMMIT": into_f41["commit_stop"], "PYTHON": "3.12"}
    assert "PYTHON" not in by_job["pungi-docs"].params
    # f4[0-9] matches the whole name: f410 is not one of pungi-pr's branches.
    assert [t.job for t in triggers_of(jenkins2, 2)] == ["pungi-docs"]
    assert decided(hub, new_f410).startswith("trigger pungi-docs for pungi#2")
    # A push into the filtered branch builds the same jobs again.
    updated, _ = pagure.push("pungi", 2)
    hub.publish(updated)
    wait_until(lambda: len(triggers_of(jenkins2, 2)) == 2, message="the push built")
    assert [t.job for t in triggers_of(jenkins2, 2)] == ["pungi-docs", "pungi-docs"]


def test_retest_and_test_honour_the_branches(jenkins2, pagure, make_config, hub_factory, wait_until):
    hub = hub_factory(make_config(jenkins2, pagure, projects=PROJECTS))
    pr = pagure.add_pr("pungi", 3, author="alice", branch="rawhide")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: finished(pagure, 3, 1), message="the docs result")
    hub.publish(pagure.add_comment("pungi", 3, "/retest", "alice"))
    wait_until(lambda: len(results(pagure, 3)) == 2, message="/retest built pungi-docs")
    # /test of the filtered-out job says why, once, and builds nothing.
    hub.publish(pagure.add_comment("pungi", 3, "/test pungi-pr", "alice"))
    why = hub.wait_for_log(r"INFO poormanci .*pungi#3: alice asked for \S+: (.*); nothing built").group(1)
    assert why == "job pungi-pr does not build pull requests into rawhide (its branches: main, f4[0-9])"
    hub.publish(pagure.add_comment("pungi", 3, "/test pungi-docs", "alice"))
    wait_until(lambda: len(results(pagure, 3)) == 3, message="/test pungi-docs built")
    assert [t.job for t in triggers_of(jenkins2, 3)] == ["pungi-docs"] * 3
    assert len(re.findall(r"does not build pull requests into rawhide", hub.log_text())) == 1


def test_a_wrong_branch_pattern_or_parameter_is_one_clear_line(jenkins2, pagure, make_config, hub_factory):
    projects = {"pungi": [{"job": "pungi-pr", "token": "BEEFCAFE", "branches": ["f4[0-9"],
                           "parameters": {"BRANCH_TO": "main"}}]}
    hub = hub_factory(make_config(jenkins2, pagure, projects=projects), ready=False)
    line = hub.wait_for_log(r"ERROR poormanci .*poormanci is not started: .*").group(0)
    assert "poormanci.projects['pungi'][0].branches[0]: not a valid regular expression" in line
    assert "poormanci.projects['pungi'][0].parameters['BRANCH_TO']: poormanci sets BRANCH_TO itself" in line
    hub.wait_for_log(r"Running the MokshaHub reactor")
    assert hub.alive()
