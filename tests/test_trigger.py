"""The trigger path through the real fedmsg-hub: Pagure PR messages become
Jenkins builds, with the right parameters, once per pushed commit."""

import re

import messages
from harness import decided


def trigger_for(jenkins, pr_id):
    return [t for t in jenkins.triggers if t.cause and t.cause.split(" ")[0].endswith(f"/pull-request/{pr_id}")]


def test_new_pr_triggers_the_job_with_its_parameters(jenkins, pagure, make_config, hub_factory, wait_until):
    pr = pagure.add_pr("pungi", 235, author="alice", branch_from="fix-thing", branch="f29")
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    (t,) = wait_until(lambda: jenkins.triggers, message="a trigger")
    assert t.job == "pungi-pr" and t.status == 201
    assert t.params == {"REPO": f"{pagure.url}/forks/alice/pungi.git", "BRANCH": "fix-thing", "BRANCH_TO": "f29",
                        "COMMIT": pr["commit_stop"]}
    assert t.cause.startswith(f"{pagure.url}/pungi/pull-request/235 ")
    # The job token travels in the form body, never in the URL.
    assert t.form["token"] == "BEEFCAFE" and "token" not in t.query
    wait_until(lambda: pagure.flags("pungi", 235), message="the pending flag")
    assert pagure.flags("pungi", 235)[0]["status"] == "pending"


def test_namespaced_project_and_folder_job(jenkins, pagure, make_config, hub_factory, wait_until):
    pr = pagure.add_pr("rpms/python-foo", 7, author="bob", branch_from="py3")
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    (t,) = wait_until(lambda: jenkins.triggers, message="a trigger")
    assert t.job == "folder/python-foo" and t.form["token"] == "F00"
    assert t.params["REPO"] == f"{pagure.url}/forks/bob/rpms/python-foo.git"
    assert any(r.path == "/job/folder/job/python-foo/buildWithParameters" for r in jenkins.requests)


def test_branch_of_the_project_itself_and_remote_pr(jenkins, pagure, make_config, hub_factory, wait_until):
    own = pagure.add_pr("pungi", 1, author="ralph", fork_user=None, branch_from="topic")
    remote = pagure.add_pr("pungi", 2, author="carol", remote_git="https://git.example.org/carol/pungi.git")
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(own))
    hub.publish(messages.pr_new(remote))
    wait_until(lambda: len(jenkins.triggers) == 2, message="two triggers")
    assert trigger_for(jenkins, 1)[0].params["REPO"] == f"{pagure.url}/pungi.git"
    assert trigger_for(jenkins, 2)[0].params["REPO"] == "https://git.example.org/carol/pungi.git"


def test_one_build_per_pushed_commit(jenkins, pagure, make_config, hub_factory, wait_until):
    pr = pagure.add_pr("pungi", 5, author="alice")
    hub = hub_factory(make_config(jenkins, pagure))
    new = messages.pr_new(pr)
    hub.publish(new)
    hub.publish(new)  # the bus delivering one message twice
    assert "already handled (same msg_id)" in decided(hub, new, nth=2)
    # Each push waits for the previous trigger to reach Jenkins: a push that
    # comes first supersedes the older run, whose build is then not wanted.
    wait_until(lambda: len(jenkins.triggers) == 1, message="the first trigger")
    # One push: the pull-request.updated topic and Pagure's notification comment.
    updated, comment = pagure.push("pungi", 5)
    hub.publish(updated)
    hub.publish(comment)
    assert "trigger pungi-pr" in decided(hub, updated)
    assert "already built" in decided(hub, comment)
    wait_until(lambda: len(jenkins.triggers) == 2, message="the push's trigger")
    rebased, rebase_comment = pagure.push("pungi", 5, rebase=True)
    hub.publish(rebase_comment)  # older Pagure: the comment alone announces it
    assert "trigger pungi-pr" in decided(hub, rebase_comment)
    wait_until(lambda: len(jenkins.triggers) == 3, message="three triggers")
    hub.publish(rebased)
    assert "already built" in decided(hub, rebased)
    commits = [t.cause for t in jenkins.triggers]
    assert len(set(commits)) == 3


def test_what_does_not_trigger(jenkins, pagure, make_config, hub_factory, wait_until, explain):
    pr = pagure.add_pr("pungi", 9, author="alice")
    other = pagure.add_pr("pungi-fedora", 1, author="alice")
    cases = {
        # A person typing Pagure's update text is not an update.
        "ignore: a comment by a person": pagure.add_comment("pungi", 9, "**1 new commit added**\n\n * ``x``\n",
                                                           "mallory"),
        "ignore: project pungi-fedora is not configured": messages.pr_new(other),
        "ignore: a Pagure notification that is not an update": pagure.add_comment(
            "pungi", 9, "**Metadata Update from @alice**:\n- tagged", "alice", notification=True),
        "ignore: pull-request.closed does not trigger builds": pagure.close("pungi", 9)[1],
    }
    cases["ignore: pungi#9 is Closed"] = pagure.push("pungi", 9)[0]  # a push to a closed PR
    for why, env in cases.items():
        assert explain(env) == [why]
    # Through the real hub: none of them builds. Messages are handled in
    # order, so once a later PR's trigger arrived, they were all decided.
    hub = hub_factory(make_config(jenkins, pagure))
    for env in cases.values():
        hub.publish(env)
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 10, branch_from="after")))
    wait_until(lambda: jenkins.triggers, message="the later PR's trigger")
    assert [t.params["BRANCH"] for t in jenkins.triggers] == ["after"]


def test_hostile_branch_never_reaches_jenkins(jenkins, pagure, make_config, hub_factory, wait_until, explain):
    bad = [pagure.add_pr("pungi", i, branch_from=b) for i, b in enumerate(["--upload-pack=evil", "a..b", "x y"], 1)]
    good = pagure.add_pr("pungi", 10, branch_from="ok")
    for pr in bad:
        [decision] = explain(messages.pr_new(pr))
        assert decision.startswith("refuse: ") and "not a valid git branch name" in decision
    hub = hub_factory(make_config(jenkins, pagure))
    for pr in bad:
        hub.publish(messages.pr_new(pr))
    hub.publish(messages.pr_new(good))
    wait_until(lambda: jenkins.triggers, message="the good PR's trigger")
    assert [t.params["BRANCH"] for t in jenkins.triggers] == ["ok"]


def test_wrong_token_and_unknown_job_are_reported_not_retried(jenkins, pagure, make_config, hub_factory, wait_until):
    config = make_config(jenkins, pagure, projects={
        "pungi": [{"job": "pungi-pr", "token": "WRONG-TOKEN-123"}],
        "rpms/python-foo": [{"job": "no-such-job", "token": "F00"}],
    })
    pagure.add_pr("pungi", 1)
    pagure.add_pr("rpms/python-foo", 2)
    hub = hub_factory(config)
    for env in list(pagure.outbox):
        hub.publish(env)
    hub.wait_for_log(r"trigger of run \d+ \(pungi-pr .*failed for good: .*403.*Jenkins rejected the job token of pungi-pr")
    hub.wait_for_log(r"trigger of run \d+ \(no-such-job .*failed for good: .*404.*no job no-such-job in Jenkins")
    # The PR says so instead of staying pending for ever.
    wait_until(lambda: [f for f in pagure.flags("pungi", 1) if f["status"] == "error"], message="an error flag")
    assert "Could not start a build" in pagure.flags("pungi", 1)[0]["comment"]
    assert len([r for r in jenkins.requests if r.path.endswith("buildWithParameters")]) == 2
    assert "WRONG-TOKEN-123" not in hub.log_text()


def test_a_slow_jenkins_does_not_hold_up_the_bus(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.slow = 2.0
    prs = [pagure.add_pr("pungi", i) for i in range(1, 4)]
    hub = hub_factory(make_config(jenkins, pagure))
    for pr in prs:
        hub.publish(messages.pr_new(pr))
    # All three are decided before Jenkins has answered the first trigger.
    hub.wait_for_log(r"trigger pungi-pr for pungi#3")
    assert "queued as" not in hub.log_text()
    wait_until(lambda: len(jenkins.triggers) == 3, timeout=15, message="three triggers")


def test_a_wrong_config_is_one_clear_line_and_the_hub_keeps_running(jenkins, pagure, make_config, hub_factory):
    config = make_config(jenkins, pagure)
    del config["poormanci.projects"]["pungi"][0]["token"]
    config["poormanci.jenkins"]["poll_interval"] = "soon"
    hub = hub_factory(config, ready=False)
    line = hub.wait_for_log(r"ERROR poormanci .*poormanci is not started: .*").group(0)
    assert "poormanci.projects['pungi'][0].token: missing" in line
    assert "poormanci.jenkins.poll_interval: expected a positive number of seconds" in line
    hub.wait_for_log(r"Running the MokshaHub reactor")
    assert hub.alive() and "Traceback" not in hub.log_text()


def test_an_unknown_key_is_one_warning_at_start_and_poormanci_runs(jenkins, pagure, make_config, hub_factory, wait_until):
    config = make_config(jenkins, pagure, jenkins={"cancel_superseeded": False})
    hub = hub_factory(config)
    hub.wait_for_log(r"WARNING poormanci .*config: poormanci.jenkins.cancel_superseeded: unknown key, ignored; "
                     r"did you mean poormanci.jenkins.cancel_superseded\?")
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 61, author="alice")))
    wait_until(lambda: jenkins.triggers, message="a trigger")
