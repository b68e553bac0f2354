"""Following our own builds: no Jenkins bus plugin needed, and the bus
message, when it comes, only makes the answer arrive sooner."""

import collections

import requests

import messages
from standins import FakeJenkins


def final_flags(pagure, project, pr_id):
    return [f for f in pagure.flags(project, pr_id) if f["status"] != "pending"]


def bot_comments(pagure, project, pr_id):
    return [c for c in pagure.comments(project, pr_id) if c["user"]["name"] == "cibot"]


def test_followed_build_is_reported_without_any_bus_message(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.queue_delay, jenkins.build_time = 0.5, 2.0
    jenkins.next_result("pungi-pr", "FAILURE")
    pr = pagure.add_pr("pungi", 21)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 21), timeout=20, message="the final flag")
    assert flag["status"] == "failure" and flag["comment"].startswith("Build 1 failed")
    pending = [h["data"]["comment"] for h in pagure.flag_history if h["data"]["status"] == "pending"]
    assert pending == ["Build queued", "Build 1 running"]
    assert len(wait_until(lambda: bot_comments(pagure, "pungi", 21), message="the comment")) == 1


def test_cancelled_queue_item_ends_canceled(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.queue_delay = 60
    pr = pagure.add_pr("pungi", 22)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    (t,) = wait_until(lambda: jenkins.triggers, message="the trigger")
    requests.post(f"{jenkins.url}/queue/cancelItem", params={"id": t.queue_id})
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 22), message="the final flag")
    assert flag["status"] == "canceled" and "cancelled in the Jenkins queue" in flag["comment"]


def test_build_stuck_in_the_queue_ends_as_an_error(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.queue_delay = 60
    pr = pagure.add_pr("pungi", 23)
    hub = hub_factory(make_config(jenkins, pagure, jenkins={"queue_timeout": 1}))
    hub.publish(messages.pr_new(pr))
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 23), message="the final flag")
    assert flag["status"] == "error" and flag["comment"].startswith("Build did not start within 1 s")
    # poormanci takes its item out of the queue rather than leave it to run unreported.
    wait_until(lambda: any(r.path == "/queue/cancelItem" for r in jenkins.requests), message="the cancel")


def test_aborted_build_ends_canceled(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.build_time = 30
    pr = pagure.add_pr("pungi", 24)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if b["building"]], message="the build")
    requests.post(f"{jenkins.build_url('pungi-pr', 1)}stop")
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 24), message="the final flag")
    assert flag["status"] == "canceled" and "aborted" in flag["comment"]


def test_bus_message_and_follow_report_once(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.build_time = 1.0
    pr = pagure.add_pr("pungi", 25)
    hub = hub_factory(make_config(jenkins, pagure, jenkins={"poll_interval": 0.5}))
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: [b for b in jenkins.builds("pungi-pr") if not b["building"]], message="the build")
    done = jenkins.bus_message_for("pungi-pr", 1)
    hub.publish(done)
    hub.publish(done)
    wait_until(lambda: final_flags(pagure, "pungi", 25), message="the final flag")
    hub.wait_for_log(r"comment of run 1 .*: done")
    # Another PR's whole loop after it: any second report of the first would have come first.
    other = pagure.add_pr("pungi", 26)
    hub.publish(messages.pr_new(other))
    wait_until(lambda: bot_comments(pagure, "pungi", 26), timeout=20, message="the second PR's comment")
    finals = [h for h in pagure.flag_history if h["id"] == 25 and h["data"]["status"] != "pending"]
    assert len(finals) == 1 and len(bot_comments(pagure, "pungi", 25)) == 1


def test_restart_in_the_middle_of_a_build(jenkins, pagure, make_config, hub_factory, wait_until):
    jenkins.build_time = 3.0
    pr = pagure.add_pr("pungi", 27)
    hub = hub_factory(make_config(jenkins, pagure))
    hub.publish(messages.pr_new(pr))
    hub.wait_for_log(r"build #1 started")
    hub.restart()
    (flag,) = wait_until(lambda: final_flags(pagure, "pungi", 27), timeout=20, message="the final flag")
    assert flag["status"] == "success"
    wait_until(lambda: bot_comments(pagure, "pungi", 27), message="the comment")
    assert len(jenkins.triggers) == 1 and len(bot_comments(pagure, "pungi", 27)) == 1


def test_thirty_builds_of_three_jobs_are_followed_per_job(pagure, make_config, hub_factory, wait_until):
    """No bus message: 30 builds of 3 jobs, all reported once. Jenkins is
    asked per job, not per build: one job listing per job and per
    poll_interval, whatever the number of its builds, and never one build."""
    jobs = {"a-pr": "A", "b-pr": "B", "c-pr": "C"}
    interval = 0.5
    with FakeJenkins({**jobs, "idle-pr": "I"}) as jenkins:
        jenkins.build_time = 3.0
        projects = {"pungi": [{"job": job, "token": token} for job, token in jobs.items()],
                    "idle": [{"job": "idle-pr", "token": "I"}]}
        hub = hub_factory(make_config(jenkins, pagure, projects=projects, jenkins={"poll_interval": interval}))
        prs = [pagure.add_pr("pungi", n) for n in range(1, 11)]
        for pr in prs:
            hub.publish(messages.pr_new(pr))
        wait_until(lambda: all(len(final_flags(pagure, "pungi", n)) == 3 for n in range(1, 11)),
                   timeout=60, message="30 final flags")
        wait_until(lambda: sum(len(bot_comments(pagure, "pungi", n)) for n in range(1, 11)) == 30,
                   message="30 comments")
        # Once each: any second report would have come with the first ones.
        finals = [h for h in pagure.flag_history if h["data"]["status"] != "pending"]
        assert len(finals) == 30 and {len(bot_comments(pagure, "pungi", n)) for n in range(1, 11)} == {3}
        assert len(jenkins.builds()) == 30
        gets = [r for r in jenkins.requests if r.method == "GET"]
        kinds = collections.Counter(r.extra.get("kind") for r in gets)
        assert kinds["build"] == 0, kinds
        # A job with nothing in flight is not looked at.
        assert jenkins.request_counts("idle-pr") == collections.Counter()
        for job in jobs:
            times = [r.time for r in gets if r.extra.get("kind") == "job" and r.extra.get("job") == job]
            # 10 builds of 3 s, followed per build, would be far more.
            assert len(times) <= (times[-1] - times[0]) / interval + 3, (job, len(times))
        queue = [r.time for r in gets if r.extra.get("kind") == "queue"]
        assert len(queue) <= (queue[-1] - queue[0]) / interval + 3, len(queue)
