"""Who may run code on Jenkins: trusted authors build on their own, others
wait for a trusted person's /ok-to-test; commands; superseded builds;
no secret in the log."""

import pytest

import messages
from standins import FakeJenkins

TRUST = {"users": ["alice"], "committers": True}  # plus the project's committers, as Pagure says


@pytest.fixture
def setup(jenkins, pagure, make_config, hub_factory):
    pagure.add_project("pungi", owner="ralph", commit=["cid"], groups={"commit": ["releng"]})
    pagure.add_group("releng", ["greg"])

    def start(**overrides):
        overrides.setdefault("trusted", TRUST)
        return hub_factory(make_config(jenkins, pagure, **overrides))

    return start


def bot_comments(pagure, pr_id):
    return [c["comment"] for c in pagure.comments("pungi", pr_id) if c["user"]["name"] == "cibot"]


def test_untrusted_pr_waits_for_ok_to_test(setup, jenkins, pagure, wait_until):
    # The approval carries over to later pushes; the default, "commit", is
    # tested in test_attacks.py.
    hub = setup(approve="pull-request")
    pr = pagure.add_pr("pungi", 30, author="mallory")
    hub.publish(messages.pr_new(pr))
    # Held: a pending flag and one comment that says how to go on; no build.
    wait_until(lambda: bot_comments(pagure, 30), message="the notice")
    (flag,) = wait_until(lambda: pagure.flags("pungi", 30), message="the pending flag")
    assert flag["status"] == "pending" and "/ok-to-test" in flag["comment"]
    for env in pagure.push("pungi", 30):  # mallory pushes again: still held, no second notice
        hub.publish(env)
    hub.wait_for_log(r"pungi#30: the author is not trusted", since=hub.log_mark())
    # Commands from untrusted people are refused, at INFO, with the reason.
    for text in ["/ok-to-test", "/retest"]:
        mark = hub.log_mark()
        env = pagure.add_comment("pungi", 30, text, "mallory")
        hub.publish(env)
        hub.wait_for_log(r"INFO poormanci .*pungi#30: refused \[.*\]: mallory is not trusted: not in trusted.users, "
                         r"not an owner, admin or committer of pungi", since=mark)
    assert jenkins.triggers == []
    # A committer (through a group Pagure reports) approves: the latest commit builds, once.
    hub.publish(pagure.add_comment("pungi", 30, "Looks harmless.\n/ok-to-test", "greg"))
    (t,) = wait_until(lambda: jenkins.triggers, message="the approved build")
    head = pagure.pr("pungi", 30)["commit_stop"]
    wait_until(lambda: [f for f in pagure.flags("pungi", 30) if f["status"] == "success"], message="the result")
    assert head[:8] in pagure.flags("pungi", 30)[0]["comment"]
    assert len(bot_comments(pagure, 30)) == 2  # the notice, the result
    # Approved for good: the next push builds without asking.
    for env in pagure.push("pungi", 30):
        hub.publish(env)
    wait_until(lambda: len(jenkins.triggers) == 2, message="the next commit's build")
    assert len({tr.cause for tr in jenkins.triggers}) == 2


@pytest.mark.parametrize("author", ["alice", "ralph", "cid", "greg"])
def test_trusted_authors_build_on_their_own(author, setup, jenkins, pagure, wait_until):
    hub = setup()
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 31, author=author)))
    wait_until(lambda: jenkins.triggers, message=f"{author}'s build")
    assert bot_comments(pagure, 31) == [] or "/ok-to-test" not in bot_comments(pagure, 31)[0]


def test_a_new_committer_is_heard_at_once_and_refusals_stay_bounded(setup, jenkins, pagure, wait_until):
    """Commit access given a moment ago counts: before refusing, the
    project's ACL is read again, at most once per project per acl_refresh."""
    hub = setup(pagure={"acl_refresh": 30})
    pr = pagure.add_pr("pungi", 38, author="mallory")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: pagure.flags("pungi", 38), message="the waiting flag")  # the ACL is cached now
    pagure.add_user_access("pungi", "carol", "commit")
    hub.publish(pagure.add_comment("pungi", 38, "/ok-to-test", "carol"))
    wait_until(lambda: jenkins.triggers, message="carol's approval to build at once")
    acl_reads = lambda: len([r for r in pagure.requests if r.method == "GET" and r.path == "/api/0/pungi"])
    before = acl_reads()
    # A flood of refusals: each logged at INFO, Pagure asked again at most once.
    mark = hub.log_mark()
    for _ in range(5):
        hub.publish(pagure.add_comment("pungi", 38, "/retest", "mallory"))
    wait_until(lambda: hub.log_text(mark).count("pungi#38: refused [Retest]: mallory is not trusted") == 5,
               message="five refusals at INFO")
    assert acl_reads() - before <= 1


def test_retest_and_test_job(jenkins, pagure, make_config, hub_factory, wait_until):
    with FakeJenkins({"pungi-pr": "BEEFCAFE", "pungi-docs": "D0C5"}) as jenkins2:
        config = make_config(jenkins2, pagure, trusted=TRUST, projects={
            "pungi": [{"job": "pungi-pr", "token": "BEEFCAFE"}, {"job": "pungi-docs", "token": "D0C5"}]})
        hub = hub_factory(config)
        pr = pagure.add_pr("pungi", 32, author="alice")
        hub.publish(messages.pr_new(pr))
        wait_until(lambda: len(pagure.flags("pungi", 32)) == 2
                   and all(f["status"] == "success" for f in pagure.flags("pungi", 32)), message="two results")
        assert len(jenkins2.triggers) == 2
        hub.publish(pagure.add_comment("pungi", 32, "/retest", "alice"))
        wait_until(lambda: len(jenkins2.triggers) == 4, message="both jobs again")
        wait_until(lambda: len(bot_comments(pagure, 32)) == 4, message="their results")
        hub.publish(pagure.add_comment("pungi", 32, "/test pungi-docs", "ralph"))
        wait_until(lambda: len(jenkins2.triggers) == 5, message="one job again")
        assert jenkins2.triggers[-1].job == "pungi-docs"
        # /retest while a build of the same commit is queued does not pile up.
        jenkins2.queue_delay = 60
        hub.publish(pagure.add_comment("pungi", 32, "/test pungi-pr", "alice"))
        wait_until(lambda: len(jenkins2.triggers) == 6, message="a queued build")
        again = pagure.add_comment("pungi", 32, "/test pungi-pr", "alice")
        hub.publish(again)
        hub.wait_for_log(r"pungi#32: pungi-pr at \w+ is already queued or running")
        assert len(jenkins2.triggers) == 6


def test_new_commit_cancels_older_builds(setup, jenkins, pagure, wait_until):
    jenkins.queue_delay = 60
    hub = setup()
    pr = pagure.add_pr("pungi", 33, author="alice")
    hub.publish(messages.pr_new(pr))
    (queued,) = wait_until(lambda: jenkins.triggers, message="the first build")
    hub.publish(pagure.push("pungi", 33)[0])
    wait_until(lambda: jenkins.queue_item(queued.queue_id).get("cancelled"), message="the queued build cancelled")
    # A running one is stopped.
    jenkins.queue_delay, jenkins.build_time = 0, 60
    pr = pagure.add_pr("pungi", 34, author="alice", branch_from="other")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if b["building"]], message="a running build")
    hub.publish(pagure.push("pungi", 34)[0])
    wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if b["result"] == "ABORTED"], message="the stop")
    # The flag follows the newest commit: still pending, for the new build.
    assert {f["status"] for f in pagure.flags("pungi", 34)} == {"pending"}


def test_no_secret_in_the_log(pagure, make_config, hub_factory, wait_until):
    with FakeJenkins({"pungi-pr": "JOB-SECRET-7f3a"}, crumbs=True, user="ci", api_token="API-SECRET-91bc") as jenkins:
        config = make_config(jenkins, pagure, projects={"pungi": [{"job": "pungi-pr", "token": "JOB-SECRET-7f3a"}]})
        hub = hub_factory(config)
        pr = pagure.add_pr("pungi", 35, author="alice")
        hub.publish(messages.pr_new(pr))
        wait_until(lambda: [f for f in pagure.flags("pungi", 35) if f["status"] == "success"], message="the result")
        wait_until(lambda: pagure.comments("pungi", 35), message="the comment")
        log = hub.log_text()
        assert "DEBUG poormanci" in log  # the log was at DEBUG
        for secret in ["JOB-SECRET-7f3a", "API-SECRET-91bc", pagure.token, jenkins.crumb]:
            assert secret not in log
        # Nor in the URLs Jenkins saw: tokens travel in bodies and headers only.
        assert all("SECRET" not in r.path + str(r.query) for r in jenkins.requests)


def test_hostile_pr_from_untrusted_fork_is_refused_before_anything(setup, jenkins, pagure, make_config,
                                                                    wait_until, explain):
    hub = setup()
    env = messages.pr_new(pagure.add_pr("pungi", 36, author="mallory", branch_from="--upload-pack=touch /tmp/x"))
    [decision] = explain(env, make_config(jenkins, pagure, trusted=TRUST))
    assert decision.startswith("refuse: pungi#36: ")  # before asking who the author is
    hub.publish(env)
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 37, author="alice", branch_from="after")))
    wait_until(lambda: jenkins.triggers, message="the later PR's trigger")
    assert [t.params["BRANCH"] for t in jenkins.triggers] == ["after"]
    assert pagure.flags("pungi", 36) == []  # no "waiting for /ok-to-test" either
