"""Real Pagure, as it really behaves (a Pagure 5.13 run is recorded in
tests/fixtures/pagure-5.13-recording/): flags keyed by (commit, uid), tokens
that expire or lack an ACL, ACLs that change while poormanci runs, flags left
on commits a PR has left. Through the real fedmsg-hub and the stand-ins."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import messages
from harness import decided, store_status, wait_until
from standins import FakeJenkins
from standins.pagure import CI_ACLS, COMMIT_FLAG

POORMANCI = Path(sys.prefix) / "bin" / "poormanci"


def tasks(config) -> list[dict]:
    try:
        return store_status(config)["tasks"]
    except RuntimeError:  # not made yet
        return []


def bot_comments(pagure, project, pr_id):
    return [c["comment"] for c in pagure.comments(project, pr_id) if c["user"]["name"] == "cibot"]


# -- 2. a bad or expired token loses nothing -------------------------------------------

def test_reports_refused_for_the_token_wait_and_go_after_a_restart(jenkins, pagure, make_config, hub_factory):
    pagure.add_token("EXPIRED-0042", CI_ACLS, user="cibot", expired=True)
    config = make_config(jenkins, pagure, pagure={"token": "EXPIRED-0042"})
    hub = hub_factory(config)
    hub.wait_for_log(r"ERROR poormanci .*poormanci.pagure.token: Pagure refuses it .*Expired token")
    pr = pagure.add_pr("pungi", 20, author="alice")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if b["result"] == "SUCCESS"], message="the build")
    # The result's flag and comment are kept, marked as waiting for a token.
    kept = wait_until(lambda: sorted(t["kind"] for t in tasks(config) if t["waiting_for_token"]) == ["comment", "flag"]
                      and tasks(config), 20, "the result's flag and comment kept")
    assert {t["kind"] for t in kept} == {"comment", "flag"}, kept
    assert pagure.flags("pungi", 20) == [] and bot_comments(pagure, "pungi", 20) == []
    # As an operator runs it: with the hub's config (whichever store it names).
    status = subprocess.run([str(POORMANCI), "status", "--config-dir", str(hub.workdir / "fedmsg.d")],
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.count("waiting for a working Pagure token (refused with 401/403)") == 2, status.stdout
    assert "2 report(s) waiting for a working Pagure token" in status.stdout
    assert "EXPIRED-0042" not in hub.log_text()
    # A new token, a restart: delivered at once (the periodic retry is 5 min away).
    hub.stop()
    hub.set_config(make_config(jenkins, pagure))
    hub.start()
    (flag,) = wait_until(lambda: pagure.flags("pungi", 20), 15, "the kept flag")
    assert flag["status"] == "success" and flag["comment"].startswith("Build 1 successful")
    wait_until(lambda: bot_comments(pagure, "pungi", 20), 15, "the kept comment")
    wait_until(lambda: tasks(config) == [], message="nothing left")
    assert len(bot_comments(pagure, "pungi", 20)) == 1
    hub.wait_for_log(r"INFO poormanci .*2 request\(s\) kept for a working Pagure token: trying them now")
    hub.wait_for_log(r"INFO poormanci .*Pagure token of cibot: ")


def test_a_missing_acl_is_named_and_its_reports_retried_until_it_works(jenkins, pagure, make_config, hub_factory):
    pagure.add_token("NO-FLAG-ACL", ["pull_request_comment"], user="cibot")
    config = make_config(jenkins, pagure, pagure={"token": "NO-FLAG-ACL", "token_retry": 0.5})
    hub = hub_factory(config)
    line = hub.wait_for_log(r"ERROR poormanci .*lacks the ACL pull_request_flag on (.*?);").group(1)
    assert set(line.split(", ")) == {"pungi", "rpms/python-foo"}
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 21, author="alice")))
    wait_until(lambda: bot_comments(pagure, "pungi", 21), 15, "the comment, which the token may post")
    wait_until(lambda: [t for t in tasks(config) if t["waiting_for_token"] and t["kind"] == "flag"], 15, "the flag kept")
    # The ACL is added (Pagure: a new token with it, same text): no restart needed.
    pagure.tokens["NO-FLAG-ACL"].acls.add("pull_request_flag")
    (flag,) = wait_until(lambda: pagure.flags("pungi", 21), 15, "the flag, on a periodic retry")
    assert flag["status"] == "success"
    wait_until(lambda: tasks(config) == [], message="nothing left")
    # Said once at WARNING, the retries at DEBUG only.
    assert len([l for l in hub.log_text().splitlines() if "WARNING" in l and "refused by Pagure" in l]) == 1


def test_an_unreachable_pagure_at_start_is_a_warning_only(jenkins, pagure, make_config, hub_factory):
    pagure.down()  # its port refuses connections
    hub = hub_factory(make_config(jenkins, pagure))
    hub.wait_for_log(r"WARNING poormanci .*cannot check the Pagure token: .*going on")
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 22, author="alice")))
    # A build needs Pagure's word on the PR: read again until Pagure answers.
    hub.wait_for_log(r"confirm of run \d+ .*pungi#22.* failed")
    pagure.up()
    wait_until(lambda: jenkins.triggers, 30, "a build all the same, once Pagure answers")
    assert hub.alive()


# -- 5. a flag left on a commit the PR has left ----------------------------------------

@pytest.mark.parametrize("how", ["cancelled", "finished after the push"])
def test_a_stale_pending_flag_is_closed_on_its_commit(how, jenkins, pagure, make_config, hub_factory):
    pagure.tokens[pagure.token].acls.add(COMMIT_FLAG)
    if how == "cancelled":
        jenkins.queue_delay = 60
        config = make_config(jenkins, pagure)
    else:
        jenkins.build_time = 1.5
        config = make_config(jenkins, pagure, jenkins={"cancel_superseded": False})
    hub = hub_factory(config)
    pr = pagure.add_pr("pungi", 40, author="alice")
    old = pr["commit_stop"]
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: pagure.flags("pungi", 40), message="the pending flag on the first commit")
    mark = hub.log_mark()
    hub.publish(pagure.push("pungi", 40)[0])
    new = pagure.pr("pungi", 40)["commit_stop"]
    (stale,) = wait_until(lambda: [f for f in pagure.flags("pungi", 40, commit=old) if f["status"] == "canceled"],
                          20, "the old commit's flag closed")
    assert stale["comment"] == f"Superseded by commit {new[:8]}"
    assert len(pagure.flags("pungi", 40, commit=old)) == 1  # updated in place, same uid
    if how == "cancelled":
        hub.wait_for_log(rf"pungi#40\) at {old[:8]}: superseded by a newer commit; not flagged", since=mark)
    else:
        hub.wait_for_log(rf"INFO poormanci .*pungi#40\) at {old[:8]}: result not flagged \(Build 1 successful .*\): "
                         rf"the pull request has moved on to {new[:8]}", since=mark)
        wait_until(lambda: [f for f in pagure.flags("pungi", 40) if f["status"] == "success"], 20, "the new result")
    assert [f["status"] for f in pagure.flags("pungi", 40, commit=new)] in (["pending"], ["success"])


def test_without_the_commit_flag_acl_a_stale_flag_stays_and_the_log_says_so(jenkins, pagure, make_config, hub_factory):
    jenkins.queue_delay = 60
    hub = hub_factory(make_config(jenkins, pagure))
    pr = pagure.add_pr("pungi", 41, author="alice")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: pagure.flags("pungi", 41), message="the pending flag")
    hub.publish(pagure.push("pungi", 41)[0])
    hub.wait_for_log(r"INFO poormanci .*close_stale_flag of run \d+ .*: the pending flag on the older commit stays: "
                     r".*401 EINVALIDTOK.*commit_flag")
    assert [f["status"] for f in pagure.flags("pungi", 41, commit=pr["commit_stop"])] == ["pending"]


# -- the whole recorded run, replayed through the real hub ------------------------------

# What the recorded run built (tests/fixtures/pagure-5.13-recording/README.md):
# pungi PR 1 at each of its ten commits plus one /retest, PR 2 once approved and
# again after its push, PR 3 and PR 4 once approved, the two PRs of
# rpms/python-foo, and PR 5 into f40: 17 builds on the first Jenkins, 1 on the
# second (it was restarted before PR 5).
EXPECTED_BUILDS = {("pungi", 1): 11, ("pungi", 2): 2, ("pungi", 3): 1, ("pungi", 4): 1,
                   ("rpms/python-foo", 1): 1, ("rpms/python-foo", 2): 1, ("pungi", 5): 1}


def idle(config) -> bool:
    """Nothing left to do but wait for a trusted person."""
    try:
        status = store_status(config)
    except RuntimeError:
        return False
    return not status["tasks"] and all(r["state"] == "gated" for r in status["open_runs"])


def test_the_recorded_pagure_run_builds_what_it_did_and_flags_only_its_own_prs(pagure, make_config, hub_factory):
    import re

    recorded = list(messages.recording())
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}) as jenkins:
        job = [{"job": "pungi-pr", "token": "BEEFCAFE"}]
        # The recorded minutes between a refusal and a new committer's
        # approval pass here in a fraction of a second: acl_refresh to match.
        # approve: the recorded poormanci's approval carried over to later pushes (PR 2).
        config = make_config(jenkins, pagure, trusted={"users": ["alice"], "committers": True}, approve="pull-request",
                             projects={"pungi": job, "rpms/python-foo": job}, pagure={"acl_refresh": 0.1})
        for project in ("pungi", "rpms/python-foo"):
            pagure.add_project(project, owner="releng")
        hub = hub_factory(config)
        for env in recorded:
            topic, msg = env["topic"], env["msg"]
            # Pagure as it was when it sent the message: ACLs, groups, the PR.
            if topic.endswith(".project.user.added"):
                pagure.add_user_access(msg["project"]["fullname"], msg["new_user"], msg["access"])
            elif topic.endswith(".project.group.added"):
                pagure.add_group_access(msg["project"]["fullname"], msg["new_group"], msg["access"])
                pagure.add_group_member(msg["new_group"], "dave")  # the README: dave is in it
            elif ".pull-request." in topic:
                pagure.load_pr(msg["pullrequest"])
            hub.publish(env)
            if ".pull-request." in topic and msg.get("agent") != "cibot":  # cibot: its own echoes
                decided(hub, env)
                wait_until(lambda: idle(config), 30, f"the work of {topic} ({env['msg_id']})")

        built = defaultdict(int)
        for trigger in jenkins.triggers:
            project, pr = re.search(rf"^{re.escape(pagure.url)}/(.+)/pull-request/(\d+) \[", trigger.cause).groups()
            built[(project, int(pr))] += 1
        assert dict(built) == EXPECTED_BUILDS
        assert sum(built.values()) == 18

    # No flag through a PR that is not its own: every flag Pagure keeps
    # (commit, uid) was only ever set through one pull request.
    through = defaultdict(set)
    for h in pagure.flag_history:
        if h["code"] == 200:
            through[(h["commit"], h["uid"])].add((h["project"], h["id"]))
    assert through and all(len(prs) == 1 for prs in through.values()), dict(through)
    # PR 5 was opened on PR 1's head commit: each has its own flag there.
    shared = next(e["msg"]["pullrequest"]["commit_stop"] for e in recorded
                  if e["topic"].endswith(".pull-request.new") and e["msg"]["pullrequest"]["id"] == 5)
    on_shared = {prs.pop() for (commit, _), prs in through.items() if commit == shared}
    assert on_shared == {("pungi", 1), ("pungi", 5)}
    assert {f["status"] for f in pagure.flags("pungi", 5)} == {"success"}
    # No "#N" for Pagure's markdown to link to the wrong PR.
    texts = [h["data"]["comment"] for h in pagure.flag_history]
    texts += [c for (project, n) in EXPECTED_BUILDS for c in bot_comments(pagure, project, n)]
    assert not [t for t in texts if re.search(r"#\d", t)], texts
