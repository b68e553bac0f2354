"""The stand-ins answer as the real Jenkins and Pagure do (no Rust core needed).

Expected Pagure bodies are what a real Pagure 5.13 answered; the behaviours
follow Jenkins' and Pagure's own source, named in tests/standins/.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

import messages
from harness import wait_until
from standins import FakeJenkins, FakePagure

TRIGGER = {"token": "BEEFCAFE", "REPO": "https://pagure.io/forks/alice/pungi.git",
           "BRANCH": "fix-thing", "cause": "pungi#235 3f2a9c1e"}


def trigger(jenkins, job="pungi-pr", data=None, **kw):
    path = "".join(f"/job/{p}" for p in job.split("/"))
    kw.setdefault("timeout", 5)
    return requests.post(f"{jenkins.url}{path}/buildWithParameters", data=data or TRIGGER,
                         allow_redirects=False, **kw)


def queue_id(response) -> int:
    return int(re.fullmatch(r"http://127\.0\.0\.1:\d+/queue/item/(\d+)/", response.headers["Location"])[1])


def get(url, **kw):
    return requests.get(url, timeout=5, **kw)


# ---------------------------------------------------------------- Jenkins ----

def test_trigger_answers_201_with_queue_location_and_is_recorded(jenkins):
    r = trigger(jenkins)
    assert r.status_code == 201
    assert r.headers["Location"] == f"{jenkins.url}/queue/item/1/"
    assert r.headers["X-Jenkins"]
    [t] = jenkins.triggers
    assert (t.job, t.queue_id, t.merged, t.status, t.route) == ("pungi-pr", 1, False, 201, "job")
    assert t.params == {"REPO": TRIGGER["REPO"], "BRANCH": "fix-thing"}  # no token, no cause
    assert t.cause == "pungi#235 3f2a9c1e" and t.token == "BEEFCAFE"
    req = jenkins.requests[-1]
    assert (req.method, req.path, req.form["BRANCH"], req.status) == (
        "POST", "/job/pungi-pr/buildWithParameters", "fix-thing", 201)


def test_trigger_reads_the_query_string_too(jenkins):
    r = requests.post(f"{jenkins.url}/job/pungi-pr/buildWithParameters",
                      params={"token": "BEEFCAFE", "BRANCH": "b"}, data={"REPO": "r"}, timeout=5,
                      allow_redirects=False)
    assert r.status_code == 201
    assert jenkins.triggers[0].params == {"BRANCH": "b", "REPO": "r"}
    assert jenkins.requests[0].query == {"token": "BEEFCAFE", "BRANCH": "b"}


def test_anonymous_with_a_wrong_token_gets_only_authentication_required(jenkins):
    # BuildAuthorizationToken: a plain AccessDeniedException; for anonymous the
    # entry point's short page, without the reason or a permission.
    r = trigger(jenkins, data={**TRIGGER, "token": "WRONG"})
    assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/html")
    assert "Authentication required" in r.text and "Invalid token" not in r.text
    assert "X-Required-Permission" not in r.headers
    assert "data-crumb-header" not in r.text and "crumb" not in r.text
    assert jenkins.triggers == [] and jenkins.builds() == []


def test_anonymous_without_a_token_needs_job_build(jenkins):
    r = trigger(jenkins, data={k: v for k, v in TRIGGER.items() if k != "token"})
    assert r.status_code == 403 and "Authentication required" in r.text
    assert r.headers["X-Required-Permission"] == "hudson.model.Item.Build"
    assert "Permission you need to have (but didn't): hudson.model.Item.Build" in r.text
    assert jenkins.triggers == []


def test_unknown_job_is_404_and_get_is_405(jenkins):
    assert trigger(jenkins, job="nope").status_code == 404
    assert get(f"{jenkins.url}/job/nope/1/api/json").status_code == 404
    assert get(f"{jenkins.url}/job/pungi-pr/buildWithParameters").status_code == 405


def test_folder_job_lives_under_job_folder_job_name(jenkins):
    r = trigger(jenkins, job="folder/python-foo", data={**TRIGGER, "token": "F00"})
    assert r.status_code == 201
    build = wait_until(lambda: jenkins.build("folder/python-foo", 1), 5, "build #1")
    assert build["url"] == f"{jenkins.url}/job/folder/job/python-foo/1/"
    assert get(build["url"] + "api/json").json()["number"] == 1
    assert jenkins.display_name("folder/python-foo") == "folder"


def test_crumbs_off_means_crumb_issuer_404(jenkins):
    assert get(f"{jenkins.url}/crumbIssuer/api/json").status_code == 404


def test_crumb_required_on_post_when_on_and_a_stale_one_refused():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, crumbs=True) as jenkins:
        r = trigger(jenkins)
        assert r.status_code == 403
        assert "No valid crumb was included in the request" in r.text
        crumb = get(f"{jenkins.url}/crumbIssuer/api/json").json()
        assert crumb["_class"] == "hudson.security.csrf.DefaultCrumbIssuer"
        assert crumb["crumbRequestField"] == "Jenkins-Crumb"
        assert re.fullmatch(r"[0-9a-f]{32}", crumb["crumb"])
        assert trigger(jenkins, headers={"Jenkins-Crumb": "0" * 32}).status_code == 403
        assert trigger(jenkins, headers={"Jenkins-Crumb": crumb["crumb"]}).status_code == 201
        jenkins.rotate_crumb()  # a new session: the crumb we hold is stale
        stale = trigger(jenkins, data={**TRIGGER, "BRANCH": "2"}, headers={"Jenkins-Crumb": crumb["crumb"]})
        assert stale.status_code == 403 and "No valid crumb was included in the request" in stale.text
        assert len(jenkins.triggers) == 1


def test_secured_jenkins_gives_anonymous_no_overall_read():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, user="ci", api_token="11aa", crumbs=True) as jenkins:
        for url in (f"{jenkins.url}/queue/item/1/api/json", f"{jenkins.url}/crumbIssuer/api/json",
                    f"{jenkins.url}/job/pungi-pr/api/json"):
            r = get(url)
            assert r.status_code == 403 and "Authentication required" in r.text, url
            assert r.headers["X-Required-Permission"] == "hudson.model.Hudson.Read"
        # The right job token does not help: the crumb filter, then Overall/Read.
        assert "No valid crumb" in trigger(jenkins).text
        assert trigger(jenkins, auth=("ci", "bad")).status_code == 401
        # An API token needs neither crumb nor job token.
        no_token = {k: v for k, v in TRIGGER.items() if k != "token"}
        assert trigger(jenkins, data=no_token, auth=("ci", "11aa")).status_code == 201
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, user="ci", api_token="11aa") as jenkins:
        r = trigger(jenkins)  # no crumbs: the right job token still needs Overall/Read
        assert r.status_code == 403 and "Authentication required" in r.text
        assert r.headers["X-Required-Permission"] == "hudson.model.Hudson.Read"
        assert jenkins.triggers == []


def test_authenticated_403_is_a_full_page_with_the_crumb_header():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, user="ci", api_token="11aa", crumbs=True) as jenkins:
        r = trigger(jenkins, data={**TRIGGER, "token": "WRONG"}, auth=("ci", "11aa"))
        assert r.status_code == 403
        head = r.text.split("</head>")[0]
        assert f'data-crumb-header="Jenkins-Crumb" data-crumb-value="{jenkins.crumb}"' in head
        assert "Invalid token provided." in r.text and "No valid crumb" not in r.text
        jenkins.user_perms.discard("build")
        r = trigger(jenkins, data={k: v for k, v in TRIGGER.items() if k != "token"}, auth=("ci", "11aa"))
        assert r.status_code == 403 and "data-crumb-header" in r.text
        assert "ci is missing the Job/Build permission" in r.text
        assert r.headers["X-Required-Permission"] == "hudson.model.Item.Build"
        assert jenkins.triggers == []


def test_queue_item_waits_then_leaves_with_the_build():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, queue_delay=0.3) as jenkins:
        url = trigger(jenkins).headers["Location"] + "api/json"
        item = get(url).json()
        assert item["_class"] == "hudson.model.Queue$WaitingItem"
        assert item["why"] and "executable" not in item
        assert item["task"]["url"] == f"{jenkins.url}/job/pungi-pr/"
        queue = get(f"{jenkins.url}/queue/api/json").json()
        assert queue["_class"] == "hudson.model.Queue" and [i["id"] for i in queue["items"]] == [1]
        item = wait_until(lambda: (i := get(url).json()).get("executable") and i, 5, "executable")
        assert item["_class"] == "hudson.model.Queue$LeftItem"
        assert item["cancelled"] is False
        assert item["executable"]["number"] == 1
        assert item["executable"]["url"] == f"{jenkins.url}/job/pungi-pr/1/"
        assert get(f"{jenkins.url}/queue/api/json").json()["items"] == []


def test_identical_waiting_item_is_merged_with_303_and_keeps_both_causes():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, queue_delay=30) as jenkins:
        first = trigger(jenkins)
        second = trigger(jenkins, data={**TRIGGER, "cause": "again"})
        other = trigger(jenkins, data={**TRIGGER, "BRANCH": "other"})
        assert (first.status_code, second.status_code, other.status_code) == (201, 303, 201)
        assert second.headers["Location"] == first.headers["Location"]
        assert queue_id(other) == 2
        assert [t.merged for t in jenkins.triggers] == [False, True, False]
        causes = jenkins.queue_item(1)["actions"][1]["causes"]
        assert [c["note"] for c in causes] == ["pungi#235 3f2a9c1e", "again"]
        # Before Jenkins 2.308 a merged trigger was answered like a new one.
        jenkins.coalesce_status = 201
        third = trigger(jenkins, data={**TRIGGER, "cause": "third"})
        assert (third.status_code, queue_id(third), jenkins.triggers[-1].merged) == (201, 1, True)


def test_result_shows_while_still_building():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, build_time=0.4, result_window=0.6) as jenkins:
        trigger(jenkins)
        url = f"{jenkins.url}/job/pungi-pr/1/api/json"
        build = wait_until(lambda: get(url).status_code == 200 and get(url).json(), 5, "build")
        assert (build["building"], build["result"], build["queueId"]) == (True, None, 1)
        early = wait_until(lambda: (b := get(url).json())["result"] and b, 5, "a result")
        assert (early["building"], early["result"]) == (True, "SUCCESS")
        done = wait_until(lambda: not (b := get(url).json())["building"] and b, 5, "the end")
        assert (done["result"], done["number"]) == ("SUCCESS", 1)
        assert done["duration"] >= 1000
        params, causes = done["actions"][0], done["actions"][1]
        assert params["_class"] == "hudson.model.ParametersAction"
        # What the build got: defined parameters only, defaults filled in.
        assert {p["name"]: p["value"] for p in params["parameters"]} == {
            "REPO": TRIGGER["REPO"], "BRANCH": "fix-thing", "BRANCH_TO": "master", "COMMIT": ""}
        assert causes["_class"] == "hudson.model.CauseAction"
        assert causes["causes"] == [{
            "_class": "hudson.model.Cause$RemoteCause", "addr": "127.0.0.1",
            "note": "pungi#235 3f2a9c1e",
            "shortDescription": "Started by remote host 127.0.0.1 with note: pungi#235 3f2a9c1e"}]
        assert {} in done["actions"]


def test_post_build_steps_make_success_worse_before_building_ends():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, result_window=0.5) as jenkins:
        jenkins.set_job("pungi-pr", post_build="UNSTABLE")  # every build of the job
        jenkins.next_post_build("pungi-pr", "FAILURE")  # the next build only
        trigger(jenkins)
        trigger(jenkins, data={**TRIGGER, "BRANCH": "2"})
        seen = {1: set(), 2: set()}

        def finished():
            for number in (1, 2):
                b = jenkins.build("pungi-pr", number)
                if b:
                    seen[number].add((b["building"], b["result"]))
            return all((False, r) in seen[n] for n, r in ((1, "FAILURE"), (2, "UNSTABLE")))

        wait_until(finished, 5, "both builds to end", interval=0.02)
        assert seen[1] == {(True, "SUCCESS"), (False, "FAILURE")}
        assert seen[2] == {(True, "SUCCESS"), (False, "UNSTABLE")}
        assert jenkins.bus_message_for("pungi-pr", 1)["topic"].endswith(".build.failed")


def test_results_are_scriptable(jenkins):
    jenkins.results["pungi-pr"] = "FAILURE"
    jenkins.next_result("pungi-pr", "UNSTABLE")
    jenkins.results["folder/python-foo"] = lambda params: "NOT_BUILT" if params["BRANCH"] == "x" else "SUCCESS"
    trigger(jenkins)
    trigger(jenkins, data={**TRIGGER, "BRANCH": "2"})
    trigger(jenkins, job="folder/python-foo", data={**TRIGGER, "token": "F00", "BRANCH": "x"})
    wait_until(lambda: len(jenkins.builds()) == 3, 5, "3 builds")
    assert [(b["fullDisplayName"], b["result"]) for b in jenkins.builds()] == [
        ("folder » python-foo #1", "NOT_BUILT"), ("pungi-pr #1", "UNSTABLE"), ("pungi-pr #2", "FAILURE")]


def test_cancel_waiting_item_only_and_stop_running_build():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, queue_delay=30) as jenkins:
        qid = queue_id(trigger(jenkins))
        r = requests.post(f"{jenkins.url}/queue/cancelItem", params={"id": qid}, timeout=5)
        assert r.status_code == 204
        item = get(f"{jenkins.url}/queue/item/{qid}/api/json").json()
        assert item["cancelled"] is True and item["executable"] is None
        # Queue.doCancelItem: an item that left the queue cannot be cancelled.
        again = requests.post(f"{jenkins.url}/queue/cancelItem", params={"id": qid}, timeout=5)
        assert again.status_code == 500 and f"Could not cancel run for id {qid}" in again.text
        assert requests.post(f"{jenkins.url}/queue/cancelItem?id=99", timeout=5).status_code == 404
        jenkins.queue_delay, jenkins.build_time = 0, 30
        started = queue_id(trigger(jenkins, data={**TRIGGER, "BRANCH": "2"}))
        wait_until(lambda: jenkins.build("pungi-pr", 1), 5, "build #1")
        r = requests.post(f"{jenkins.url}/queue/cancelItem", params={"id": started}, timeout=5)
        assert r.status_code == 500 and "Could not cancel run" in r.text
        r = requests.post(f"{jenkins.url}/job/pungi-pr/1/stop", allow_redirects=False, timeout=5)
        assert r.status_code == 302
        assert jenkins.build("pungi-pr", 1)["result"] == "ABORTED"
        wait_until(lambda: not jenkins.build("pungi-pr", 1)["building"], 5, "the build to end")
        assert jenkins.bus_message_for("pungi-pr", 1)["topic"].endswith(".build.aborted")


def test_cancel_without_job_cancel_is_422():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, queue_delay=30, anonymous_perms={"read"}) as jenkins:
        qid = queue_id(trigger(jenkins))
        r = requests.post(f"{jenkins.url}/queue/cancelItem", params={"id": qid}, timeout=5)
        assert r.status_code == 422 and f"Item for id ({qid}) is not cancellable" in r.text
        assert jenkins.queue_item(qid)["_class"] == "hudson.model.Queue$WaitingItem"


def test_forgotten_queue_item_is_404(jenkins):
    qid = queue_id(trigger(jenkins))
    url = f"{jenkins.url}/queue/item/{qid}/api/json"
    assert get(url).status_code == 200
    jenkins.forget_queue_item(qid)
    assert get(url).status_code == 404


def test_left_items_are_forgotten_after_a_while_and_on_restart():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, left_ttl=0.5) as jenkins:
        first = queue_id(trigger(jenkins))
        url = f"{jenkins.url}/queue/item/{first}/api/json"
        assert get(url).json()["executable"]["number"] == 1
        wait_until(lambda: get(url).status_code == 404, 5, "the left item forgotten")
        # The build still says which item it came from.
        assert jenkins.build("pungi-pr", 1)["queueId"] == first
        jenkins.left_ttl, jenkins.queue_delay = None, 0
        left = queue_id(trigger(jenkins, data={**TRIGGER, "BRANCH": "2"}))
        wait_until(lambda: jenkins.build("pungi-pr", 2), 5, "build #2")
        jenkins.queue_delay = 60
        waiting = queue_id(trigger(jenkins, data={**TRIGGER, "BRANCH": "3"}))
        assert get(f"{jenkins.url}/queue/item/{left}/api/json").status_code == 200
        port = jenkins.port
        jenkins.restart()
        assert jenkins.port == port
        assert get(f"{jenkins.url}/queue/item/{left}/api/json").status_code == 404
        assert get(f"{jenkins.url}/queue/item/{waiting}/api/json").json()["_class"] == "hudson.model.Queue$WaitingItem"
        assert [b["queueId"] for b in jenkins.builds("pungi-pr")] == [first, left]


def test_job_answers_its_recent_builds_with_tree_and_range(jenkins):
    for branch in ("1", "2", "3"):
        trigger(jenkins, data={**TRIGGER, "BRANCH": branch})
    wait_until(lambda: len(jenkins.builds("pungi-pr")) == 3, 5, "3 builds")
    tree = "builds[number,queueId,url,building,result]{0,2}"
    r = get(f"{jenkins.job_url('pungi-pr')}api/json", params={"tree": tree})
    builds = r.json()["builds"]
    assert set(r.json()) == {"_class", "builds"}
    assert [(b["number"], b["queueId"]) for b in builds] == [(3, 3), (2, 2)]  # newest first
    assert all(set(b) == {"_class", "number", "queueId", "url", "building", "result"} for b in builds)
    assert builds[0]["url"] == jenkins.build_url("pungi-pr", 3)
    one = get(f"{jenkins.job_url('pungi-pr')}api/json", params={"tree": "builds[number]{2}"}).json()
    assert one["builds"] == [{"_class": "hudson.model.FreeStyleBuild", "number": 1}]
    plain = get(f"{jenkins.job_url('pungi-pr')}api/json").json()
    assert plain["builds"][0] == {"_class": "hudson.model.FreeStyleBuild", "number": 3,
                                  "url": jenkins.build_url("pungi-pr", 3)}
    assert plain["buildable"] is True and plain["nextBuildNumber"] == 4


def test_build_answer_follows_the_tree_the_core_asks_for(jenkins):
    trigger(jenkins)
    wait_until(lambda: jenkins.build("pungi-pr", 1), 5, "build #1")
    tree = "number,url,result,building,actions[causes[note,shortDescription],parameters[name,value]]"
    b = get(f"{jenkins.build_url('pungi-pr', 1)}api/json", params={"tree": tree}).json()
    assert set(b) == {"_class", "number", "url", "result", "building", "actions"}
    assert b["actions"][0] == {"_class": "hudson.model.ParametersAction", "parameters": [
        {"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
        for k, v in (("REPO", TRIGGER["REPO"]), ("BRANCH", "fix-thing"), ("BRANCH_TO", "master"), ("COMMIT", ""))]}
    assert b["actions"][1]["causes"][0]["note"] == "pungi#235 3f2a9c1e"
    assert set(b["actions"][1]["causes"][0]) == {"_class", "note", "shortDescription"}


def build_params(jenkins, job, number):
    b = wait_until(lambda: jenkins.build(job, number), 5, f"{job} #{number}")
    return {p["name"]: p["value"] for p in b["actions"][0]["parameters"]}


def test_undefined_parameters_are_dropped_and_defaults_filled_in(jenkins):
    trigger(jenkins, data={**TRIGGER, "EXTRA": "1", "COMMIT": "c0ffee"})
    assert build_params(jenkins, "pungi-pr", 1) == {
        "REPO": TRIGGER["REPO"], "BRANCH": "fix-thing", "BRANCH_TO": "master", "COMMIT": "c0ffee"}
    assert jenkins.triggers[0].params["EXTRA"] == "1"  # it was sent, the build never saw it
    # An older job, without COMMIT; a job that defines neither REPO nor BRANCH.
    jenkins.set_job("pungi-pr", params={"REPO": "", "BRANCH": "", "BRANCH_TO": "master"})
    trigger(jenkins, data={**TRIGGER, "COMMIT": "c0ffee", "BRANCH": "2"})
    assert build_params(jenkins, "pungi-pr", 2) == {"REPO": TRIGGER["REPO"], "BRANCH": "2", "BRANCH_TO": "master"}
    jenkins.set_job("pungi-pr", params={"TARGET": "master"})
    trigger(jenkins, data={**TRIGGER, "BRANCH": "3"})
    assert build_params(jenkins, "pungi-pr", 3) == {"TARGET": "master"}
    trigger(jenkins, data={**TRIGGER, "BRANCH": "4"})  # the same parameters for the job: merged
    assert jenkins.triggers[-1].merged or len(jenkins.builds("pungi-pr")) == 4
    defs = get(f"{jenkins.job_url('pungi-pr')}api/json").json()["property"][0]["parameterDefinitions"]
    assert [d["name"] for d in defs] == ["TARGET"]


def test_disabled_parameterless_and_unknown_jobs(jenkins):
    jenkins.set_job("pungi-pr", disabled=True)
    r = trigger(jenkins)
    assert r.status_code == 409 and "pungi-pr is not buildable" in r.text
    assert get(f"{jenkins.job_url('pungi-pr')}api/json").json()["buildable"] is False
    jenkins.set_job("pungi-pr", disabled=False, params=None)
    r = trigger(jenkins)
    assert r.status_code == 400 and "pungi-pr is not parameterized" in r.text
    jenkins.not_parameterized_status = 500  # older Jenkins: an uncaught IllegalStateException
    r = trigger(jenkins)
    assert r.status_code == 500
    assert "java.lang.IllegalStateException: This build is not parameterized!" in r.text
    assert "data-crumb-header" in r.text
    # The token is checked first: a wrong one is a 403 even on a disabled job.
    jenkins.set_job("pungi-pr", disabled=True)
    assert trigger(jenkins, data={**TRIGGER, "token": "WRONG"}).status_code == 403
    assert trigger(jenkins, job="nope").status_code == 404
    assert jenkins.triggers == []


def by_token(jenkins, job, data=None, **kw):
    kw.setdefault("timeout", 5)
    return requests.post(f"{jenkins.url}/buildByToken/buildWithParameters", params={"job": job},
                         data=data or TRIGGER, allow_redirects=False, **kw)


def test_build_by_token_route():
    jobs = {"pungi-pr": "BEEFCAFE", "folder/python-foo": "F00", "no-token": None}
    with FakeJenkins(jobs, crumbs=True, user="ci", api_token="11aa", queue_delay=30) as jenkins:
        # Secured: anonymous has no Overall/Read, yet this route works, without a crumb.
        r = by_token(jenkins, "pungi-pr")
        assert r.status_code == 201 and r.headers["Location"] == "/queue/item/1/"  # relative
        merged = by_token(jenkins, "pungi-pr", data={**TRIGGER, "cause": "again"})
        assert merged.status_code == 303 and merged.headers["Location"].endswith("/queue/item/1/")
        assert by_token(jenkins, "folder/python-foo", data={**TRIGGER, "token": "F00"}).status_code == 201
        assert by_token(jenkins, "no-token").status_code == 404  # not revealed
        assert by_token(jenkins, "nope").status_code == 404
        assert by_token(jenkins, "pungi-pr", data={**TRIGGER, "token": "WRONG"}).status_code == 403
        jenkins.set_job("pungi-pr", disabled=True)
        r = by_token(jenkins, "pungi-pr", data={**TRIGGER, "BRANCH": "x"})
        assert r.status_code == 400 and "pungi-pr is not buildable" in r.text
        assert [(t.job, t.route, t.status) for t in jenkins.triggers] == [
            ("pungi-pr", "buildByToken", 201), ("pungi-pr", "buildByToken", 303),
            ("folder/python-foo", "buildByToken", 201)]
        causes = jenkins.queue_item(1)["actions"][1]["causes"]
        assert [(c["_class"], c["note"]) for c in causes] == [
            ("hudson.model.Cause$RemoteCause", "pungi#235 3f2a9c1e"), ("hudson.model.Cause$RemoteCause", "again")]


def test_trigger_by_an_api_user_without_token_has_a_user_cause():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, user="ci", api_token="11aa") as jenkins:
        no_token = {k: v for k, v in TRIGGER.items() if k != "token"}
        assert trigger(jenkins, data=no_token, auth=("ci", "11aa")).status_code == 201
        [cause] = jenkins.queue_item(1)["actions"][1]["causes"]
        assert cause == {"_class": "hudson.model.Cause$UserIdCause", "shortDescription": "Started by user ci",
                         "userId": "ci", "userName": "ci"}
        assert "note" not in cause


def test_request_counts_per_method_and_kind(jenkins):
    trigger(jenkins)
    trigger(jenkins, data={**TRIGGER, "BRANCH": "2"})
    get(f"{jenkins.url}/queue/item/1/api/json")
    wait_until(lambda: jenkins.build("pungi-pr", 1), 5, "build #1")
    get(f"{jenkins.build_url('pungi-pr', 1)}api/json")
    get(f"{jenkins.url}/crumbIssuer/api/json")
    trigger(jenkins, job="folder/python-foo", data={**TRIGGER, "token": "F00"})
    assert jenkins.request_counts("pungi-pr") == {("POST", "trigger"): 2, ("GET", "build"): 1}
    assert jenkins.request_counts() == {("POST", "trigger"): 3, ("GET", "build"): 1,
                                        ("GET", "queue_item"): 1, ("GET", "crumb"): 1}


def test_bus_message_is_shaped_like_the_fixture(jenkins):
    real = messages.fixture("jenkins.build.passed.1")
    a = jenkins.bus_message("pungi-pr", 7, "passed")
    b = jenkins.bus_message("pungi-pr", 7, "failed")
    assert set(a) == set(real) and set(a["msg"]) == set(real["msg"])
    assert a["topic"] == "org.fedoraproject.prod.jenkins.build.passed"
    assert b["topic"] == "org.fedoraproject.prod.jenkins.build.failed"
    assert a["msg"]["project"] == "pungi-pr" and a["msg"]["build"] == 7
    assert a["msg_id"] != b["msg_id"] and re.fullmatch(r"\d{4}-[0-9a-f-]{36}", a["msg_id"])


def test_down_refuses_connections_and_up_keeps_port_and_state(jenkins):
    trigger(jenkins)
    url, port = jenkins.url, jenkins.port
    jenkins.down()
    with pytest.raises(requests.ConnectionError):
        trigger(jenkins)
    jenkins.up()
    assert (jenkins.url, jenkins.port) == (url, port)
    assert queue_id(trigger(jenkins, data={**TRIGGER, "BRANCH": "2"})) == 2


def test_failures_500_before_and_after_the_work(jenkins):
    jenkins.fail_next(1, "500")
    assert trigger(jenkins).status_code == 500
    assert jenkins.triggers == []
    jenkins.fail_next(1, "500-after")
    assert trigger(jenkins).status_code == 500
    assert len(jenkins.triggers) == 1  # it happened, but the client was told otherwise
    assert [r.failed for r in jenkins.requests] == ["500", "500-after"]


def test_fail_rate_fails_about_that_share(jenkins):
    jenkins.fail_rate = 0.5
    codes = [get(f"{jenkins.url}/api/json").status_code for _ in range(40)]
    assert 8 <= codes.count(500) <= 32 and codes.count(200) == 40 - codes.count(500)


def test_timeout_mode_holds_the_request_and_stop_releases_it():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}) as jenkins:
        jenkins.fail_mode, jenkins.fail_rate = "timeout", 1.0
        with pytest.raises(requests.Timeout):
            trigger(jenkins, timeout=0.3)
        assert jenkins.triggers == [] and jenkins.requests[0].failed == "timeout"
        started = time.monotonic()
    assert time.monotonic() - started < 5  # the held request did not keep it up for `hang` s


def test_slow_triggers_are_served_concurrently():
    with FakeJenkins({"pungi-pr": "BEEFCAFE"}, slow=0.5) as jenkins:
        codes = []
        threads = [threading.Thread(target=lambda i=i: codes.append(
            trigger(jenkins, data={**TRIGGER, "BRANCH": str(i)}).status_code)) for i in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        assert get(f"{jenkins.url}/api/json").status_code == 200  # not stuck behind them
        for t in threads:
            t.join()
        assert codes == [201] * 4
        assert 0.5 <= time.monotonic() - started < 1.5


# ----------------------------------------------------------------- Pagure ----

PR_KEYS = {"assignee", "branch", "branch_from", "cached_merge_status", "closed_at", "closed_by",
           "comments", "commit_start", "commit_stop", "date_created", "full_url", "id",
           "initial_comment", "last_updated", "project", "remote_git", "repo_from", "status",
           "tags", "threshold_reached", "title", "uid", "updated_on", "user"}
PROJECT_KEYS = {"access_groups", "access_users", "close_status", "custom_keys", "date_created",
                "date_modified", "description", "full_url", "fullname", "id", "milestones", "name",
                "namespace", "parent", "priorities", "tags", "url_path", "user"}
COMMIT = "3f2a9c1e" + "0" * 32


@pytest.fixture
def pr(pagure):
    return pagure.add_pr("pungi", 235, author="alice", fork_user="alice", branch_from="fix-thing",
                         commit=COMMIT)


def api(pagure, path):
    return f"{pagure.url}/api/0/{path}"


def post(pagure, path, token=None, **kw):
    token = pagure.token if token is None else token
    return requests.post(api(pagure, path), headers={"Authorization": f"token {token}"},
                         timeout=5, **kw)


def invalid_token(pagure, errors):
    return {"error": f"Invalid or expired token. Please visit {pagure.url}/settings#nav-api-tab "
                     "to get or renew your API token.",
            "error_code": "EINVALIDTOK", "errors": errors}


def test_get_pr_has_pagure5_shape(pagure, pr):
    r = get(api(pagure, "pungi/pull-request/235"))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    got = r.json()
    assert got == pr and set(got) == PR_KEYS
    assert (got["id"], got["status"], got["commit_stop"], got["branch_from"], got["branch"]) == (
        235, "Open", COMMIT, "fix-thing", "master")
    assert got["user"]["name"] == "alice"
    assert set(got["project"]) == PROJECT_KEYS and got["project"]["parent"] is None
    assert got["repo_from"]["fullname"] == "forks/alice/pungi"
    assert got["repo_from"]["url_path"] == "fork/alice/pungi"
    assert got["repo_from"]["parent"]["fullname"] == "pungi"
    assert got["repo_from"]["user"]["name"] == "alice"
    assert re.fullmatch(r"[0-9a-f]{32}", got["uid"])
    assert re.fullmatch(r"\d+\.\d+", got["date_created"])


def test_pr_from_a_branch_and_namespaced_project(pagure):
    pr = pagure.add_pr("rpms/python-foo", 3, author="bob", fork_user=None)
    got = get(api(pagure, "rpms/python-foo/pull-request/3")).json()
    assert got == pr
    assert got["project"]["fullname"] == "rpms/python-foo" and got["project"]["namespace"] == "rpms"
    assert got["repo_from"]["fullname"] == "rpms/python-foo"


def test_get_project_with_access_lists(pagure):
    pagure.add_project("pungi", owner="lsedlar", admin=["hlin"], commit=["dgregor"],
                       groups={"commit": ["pungi-devs"]})
    got = get(api(pagure, "pungi")).json()
    assert set(got) == PROJECT_KEYS
    assert got["access_users"] == {"owner": ["lsedlar"], "admin": ["hlin"], "commit": ["dgregor"],
                                   "collaborator": [], "ticket": []}
    assert got["access_groups"]["commit"] == ["pungi-devs"]
    assert get(api(pagure, "nope")).json() == {"error": "Project not found", "error_code": "ENOPROJECT"}


def test_not_found_errors(pagure, pr):
    r = get(api(pagure, "pungi/pull-request/999"))
    assert (r.status_code, r.json()) == (404, {"error": "Pull-Request not found", "error_code": "ENOREQ"})
    r = post(pagure, "pungi/pull-request/999/flag",
             data={"username": "J", "status": "success", "comment": "x", "url": "http://x/", "uid": "u"})
    assert (r.status_code, r.json()["error_code"]) == (404, "ENOREQ")  # before form validation
    r = post(pagure, "nope/pull-request/1/comment", data={"comment": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "Project not found", "error_code": "ENOPROJECT"})


def test_comment_added_and_shown(pagure, pr):
    r = post(pagure, "pungi/pull-request/235/comment", data={"comment": "Build #1 passed"})
    assert (r.status_code, r.json()) == (200, {"message": "Comment added"})
    r = post(pagure, "pungi/pull-request/235/comment", json={"comment": "json body comment"})
    assert (r.status_code, r.json()) == (200, {"message": "Comment added"})
    comments = pagure.comments("pungi", 235)
    assert [(c["comment"], c["user"]["name"], c["notification"], c["id"]) for c in comments] == [
        ("Build #1 passed", "cibot", False, 1), ("json body comment", "cibot", False, 2)]
    assert get(api(pagure, "pungi/pull-request/235")).json()["comments"] == comments
    assert pagure.outbox[-1]["topic"] == "io.pagure.prod.pagure.pull-request.comment.added"


@pytest.mark.parametrize("kw", [{"data": {"comment": ""}}, {}, {"data": {"comment": "  "}}])
def test_empty_comment_is_400(pagure, pr, kw):
    r = post(pagure, "pungi/pull-request/235/comment", **kw)
    assert (r.status_code, r.json()) == (400, {
        "error": "Invalid or incomplete input submitted", "error_code": "EINVALIDREQ",
        "errors": {"comment": ["This field is required."]}})
    assert pagure.comments("pungi", 235) == []


@pytest.mark.parametrize("header", [None, "token NOTAREALTOKEN", "Bearer {token}"])
def test_bad_token_is_401(pagure, pr, header):
    headers = {} if header is None else {"Authorization": header.format(token=pagure.token)}
    for path in ("pungi/pull-request/235/comment", "nope/pull-request/1/flag"):
        r = requests.post(api(pagure, path), headers=headers, data={"comment": "x"}, timeout=5)
        assert (r.status_code, r.json()) == (401, invalid_token(pagure, "Invalid token"))


def test_token_lacking_acl_is_401(pagure, pr):
    pagure.add_token("NOBODY", ["issue_create"], user="nobody")
    r = post(pagure, "pungi/pull-request/235/comment", token="NOBODY", data={"comment": "x"})
    assert (r.status_code, r.json()) == (401, invalid_token(pagure, "Missing ACLs: pull_request_comment"))
    r = post(pagure, "pungi/pull-request/235/flag", token="NOBODY",
             data={"username": "J", "status": "success", "comment": "x", "url": "http://x/", "uid": "u"})
    assert (r.status_code, r.json()) == (401, invalid_token(pagure, "Missing ACLs: pull_request_flag"))


FLAG = {"username": "Jenkins", "status": "pending", "comment": "Build #1 running",
        "url": "http://127.0.0.1:8080/job/test/1/", "uid": "jenkins-test-1"}


def test_flag_added_then_updated_in_place_by_uid(pagure, pr):
    r = post(pagure, "pungi/pull-request/235/flag", data=FLAG)
    assert r.status_code == 200
    added = r.json()
    assert (added["message"], added["uid"], added["user"]) == ("Flag added", "jenkins-test-1", "cibot")
    assert set(added) == {"avatar_url", "flag", "message", "uid", "user"}
    assert set(added["flag"]) == {"comment", "commit_hash", "date_created", "date_updated", "percent",
                                  "status", "url", "user", "username"}
    assert (added["flag"]["commit_hash"], added["flag"]["percent"]) == (COMMIT, None)
    assert added["flag"]["user"]["emails"] == ["cibot@example.test"]
    r = post(pagure, "pungi/pull-request/235/flag",
             data={**FLAG, "status": "success", "percent": "100", "comment": "Build #1 passed"})
    updated = r.json()
    assert (updated["message"], updated["uid"], updated["flag"]["percent"]) == (
        "Flag updated", "jenkins-test-1", 100)
    assert updated["flag"]["date_created"] == added["flag"]["date_created"]
    [flag] = pagure.flags("pungi", 235)
    assert {k: flag[k] for k in ("uid", "status", "comment", "url", "percent", "username",
                                 "commit_hash", "user")} == {
        "uid": "jenkins-test-1", "status": "success", "comment": "Build #1 passed",
        "url": FLAG["url"], "percent": 100, "username": "Jenkins", "commit_hash": COMMIT,
        "user": "cibot"}
    assert [(h["message"], h["data"]["status"]) for h in pagure.flag_history] == [
        ("Flag added", "pending"), ("Flag updated", "success")]
    listed = get(api(pagure, "pungi/pull-request/235/flag")).json()["flags"]
    assert [f["status"] for f in listed] == ["success"] and "emails" not in listed[0]["user"]
    assert [m["topic"].rsplit(".", 2)[-2:] for m in pagure.outbox[-2:]] == [
        ["flag", "added"], ["flag", "updated"]]


def test_flag_without_uid_gets_a_server_made_one(pagure, pr):
    data = {k: v for k, v in FLAG.items() if k != "uid"}
    uids = {post(pagure, "pungi/pull-request/235/flag", data=data).json()["uid"] for _ in range(2)}
    assert len(uids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", u) for u in uids)
    assert len(pagure.flags("pungi", 235)) == 2


def test_flag_legacy_form_derives_status_from_percent(pagure, pr):
    base = {k: v for k, v in FLAG.items() if k != "status"}
    for percent, uid, status in (("0", "a", "failure"), ("100", "b", "success"), (None, "c", "pending")):
        data = {**base, "uid": uid, **({"percent": percent} if percent else {})}
        assert post(pagure, "pungi/pull-request/235/flag", data=data).json()["flag"]["status"] == status


@pytest.mark.parametrize("change, errors", [
    ({"status": "bogus", "url": "http://x/"}, {"status": ["Not a valid choice."], "url": ["Invalid input."]}),
    ({"url": None}, {"url": ["This field is required."]}),
    ({"url": "http://x/", "uid": "u" * 40}, {"url": ["Invalid input."]}),
    ({"username": None, "comment": ""}, {"username": ["This field is required."],
                                          "comment": ["This field is required."]}),
])
def test_flag_validation_errors(pagure, pr, change, errors):
    data = {k: v for k, v in {**FLAG, **change}.items() if v is not None}
    r = post(pagure, "pungi/pull-request/235/flag", data=data)
    assert (r.status_code, r.json()) == (400, {
        "error": "Invalid or incomplete input submitted", "error_code": "EINVALIDREQ", "errors": errors})
    assert pagure.flags("pungi", 235) == []
    assert pagure.flag_history[-1]["code"] == 400


@pytest.mark.parametrize("status, url, uid", [
    ("success", "http://127.0.0.1:8080/x", "u" * 32),
    ("success", "https://ci.example.test/job/1", "u1"),
    ("canceled", "http://127.0.0.1:8080/x", "u2"),
    ("success", "http://localhost:8080/x", "u3"),
])
def test_flag_accepted_cases(pagure, pr, status, url, uid):
    r = post(pagure, "pungi/pull-request/235/flag",
             data={"username": "Jenkins", "comment": "x", "status": status, "url": url, "uid": uid})
    assert (r.status_code, r.json()["message"], r.json()["uid"]) == (200, "Flag added", uid)


def test_flag_uid_longer_than_32_is_a_database_error(pagure, pr):
    r = post(pagure, "pungi/pull-request/235/flag", data={**FLAG, "uid": "u" * 33})
    assert (r.status_code, r.json()) == (400, {
        "error": "An error occurred at the database level and prevent the action from reaching completion",
        "error_code": "EDBERROR"})
    assert pagure.flags("pungi", 235) == []
    pagure.uid_limit = None  # SQLite keeps it
    assert post(pagure, "pungi/pull-request/235/flag", data={**FLAG, "uid": "u" * 33}).status_code == 200


def test_flags_live_per_commit_and_uid_across_pull_requests(pagure, pr):
    # The same branch proposed to master (235) and to f40 (236): one head commit.
    other = pagure.add_pr("pungi", 236, author="alice", branch_from="fix-thing", branch="f40", commit=COMMIT)
    assert post(pagure, "pungi/pull-request/235/flag", data={**FLAG, "status": "success"}).json()["message"] == "Flag added"
    r = post(pagure, "pungi/pull-request/236/flag", data={**FLAG, "status": "failure"})
    assert r.json()["message"] == "Flag updated"  # PR 235's flag, overwritten
    assert pagure.outbox[-1]["topic"].endswith(".pull-request.flag.updated")
    assert pagure.outbox[-1]["msg"]["pullrequest"]["id"] == other["id"]
    for pr_id in (235, 236):
        listed = get(api(pagure, f"pungi/pull-request/{pr_id}/flag")).json()["flags"]
        assert [f["status"] for f in listed] == ["failure"]
    # A push: the list shows the new head's flags; the old commit keeps its own.
    pagure.push("pungi", 235, "b" * 40)
    assert get(api(pagure, "pungi/pull-request/235/flag")).json()["flags"] == []
    post(pagure, "pungi/pull-request/235/flag", data={**FLAG, "status": "pending"})
    assert [f["status"] for f in pagure.flags("pungi", 235)] == ["pending"]
    assert [f["status"] for f in pagure.flags("pungi", 235, commit=COMMIT)] == ["failure"]
    assert [f["status"] for f in pagure.flags("pungi", 236)] == ["failure"]
    # Another project's PR on the same commit does not list them.
    pagure.add_pr("rpms/pungi", 1, commit=COMMIT)
    assert get(api(pagure, "rpms/pungi/pull-request/1/flag")).json()["flags"] == []


def test_whoami(pagure):
    r = post(pagure, "-/whoami")
    assert (r.status_code, r.json()) == (200, {"username": "cibot"})
    r = post(pagure, "-/whoami", token="NOTAREALTOKEN")
    assert (r.status_code, r.json()) == (401, invalid_token(pagure, "Invalid token"))
    r = requests.post(api(pagure, "-/whoami"), timeout=5)
    assert r.status_code == 401 and r.json()["error_code"] == "EINVALIDTOK" and "errors" not in r.json()
    pagure.add_token("NOACLS", [], user="dave")
    assert post(pagure, "-/whoami", token="NOACLS").json() == {"username": "dave"}


def test_expired_token_is_401_everywhere(pagure, pr):
    pagure.expire_token(pagure.token)
    for path, data in (("-/whoami", None), ("pungi/pull-request/235/flag", FLAG),
                       ("pungi/pull-request/235/comment", {"comment": "x"})):
        r = post(pagure, path, data=data)
        assert (r.status_code, r.json()) == (401, invalid_token(pagure, "Expired token")), path
    assert pagure.flags("pungi", 235) == [] and pagure.comments("pungi", 235) == []


def test_project_token_works_on_its_project_only(pagure, pr):
    pagure.add_pr("rpms/python-foo", 3)
    pagure.add_token("PROJTOKEN", ["pull_request_flag"], user="cibot", project="pungi")
    assert post(pagure, "pungi/pull-request/235/flag", token="PROJTOKEN", data=FLAG).status_code == 200
    r = post(pagure, "rpms/python-foo/pull-request/3/flag", token="PROJTOKEN", data=FLAG)
    assert r.status_code == 401 and r.json()["error_code"] == "EINVALIDTOK" and "errors" not in r.json()


def test_project_access_changes_are_seen_at_once(pagure, pr):
    def access():
        p = get(api(pagure, "pungi")).json()
        return p["access_users"], p["access_groups"]

    assert access()[0]["commit"] == []
    added = pagure.add_user_access("pungi", "carol", "commit", by="ralph")
    assert added["topic"] == "io.pagure.prod.pagure.project.user.added"
    assert (added["msg"]["new_user"], added["msg"]["access"], added["msg"]["agent"]) == ("carol", "commit", "ralph")
    assert access()[0]["commit"] == ["carol"]
    group = pagure.add_group_access("pungi", "packagers", "commit")
    assert group["topic"].endswith(".project.group.added") and group["msg"]["new_group"] == "packagers"
    assert access()[1]["commit"] == ["packagers"]
    assert get(api(pagure, "group/packagers")).json()["members"] == []
    pagure.add_group_member("packagers", "dave")
    assert get(api(pagure, "group/packagers")).json()["members"] == ["dave"]
    pagure.add_user_access("pungi", "carol", "admin")  # moved, not doubled
    users = access()[0]
    assert (users["commit"], users["admin"]) == ([], ["carol"])


def test_closed_pr_still_takes_comments_and_flags(pagure, pr):
    comment, closed = pagure.close("pungi", 235, merged=True, by="lsedlar")
    assert closed["topic"] == "io.pagure.prod.pagure.pull-request.closed"
    assert closed["msg"]["merged"] is True and closed["msg"]["agent"] == "lsedlar"
    assert comment["msg"]["pullrequest"]["comments"][-1]["comment"] == "Pull-Request has been merged by lsedlar"
    got = get(api(pagure, "pungi/pull-request/235")).json()
    assert (got["status"], got["closed_by"]["name"]) == ("Merged", "lsedlar")
    assert post(pagure, "pungi/pull-request/235/flag", data=FLAG).status_code == 200
    assert post(pagure, "pungi/pull-request/235/comment", data={"comment": "late"}).status_code == 200


def test_push_changes_commit_and_returns_updated_plus_comment(pagure, pr):
    updated, comment = pagure.push("pungi", 235, "b" * 40)
    got = get(api(pagure, "pungi/pull-request/235")).json()
    assert got["commit_stop"] == "b" * 40 and got["commit_start"] == COMMIT
    assert updated["topic"] == "io.pagure.prod.pagure.pull-request.updated"
    assert updated["msg"]["agent"] == "pagure" and updated["msg"]["pullrequest"]["comments"] == []
    assert updated["msg"]["pullrequest"]["commit_stop"] == "b" * 40
    assert comment["topic"] == "io.pagure.prod.pagure.pull-request.comment.added"
    assert comment["msg"]["pullrequest"] == got
    last = got["comments"][-1]
    assert (last["notification"], last["user"]["name"]) == (True, "alice")
    assert last["comment"].startswith("**1 new commit added**")
    rebased, _ = pagure.push("pungi", 235, rebase=True)
    assert rebased["topic"].endswith(".pull-request.rebased")
    assert pagure.pr("pungi", 235)["comments"][-1]["comment"].startswith("rebased onto ")


def test_pagure_down_and_up(pagure, pr):
    pagure.down()
    with pytest.raises(requests.ConnectionError):
        get(api(pagure, "pungi/pull-request/235"))
    pagure.up()
    assert get(api(pagure, "pungi/pull-request/235")).status_code == 200


def test_pagure_fail_next(pagure, pr):
    pagure.fail_next(2)
    assert [post(pagure, "pungi/pull-request/235/comment", data={"comment": "x"}).status_code
            for _ in range(3)] == [500, 500, 200]
    assert len(pagure.comments("pungi", 235)) == 1


# --------------------------------------------------------------- messages ----

APPENDIX_FLAG_KEYS = {"comment", "commit_hash", "date_created", "date_updated", "percent", "status",
                      "url", "user", "username"}


def test_pr_messages_agree_with_the_api(pagure, pr):
    new = messages.pr_new(pr)
    assert set(new) == {"topic", "msg", "msg_id", "timestamp", "i"}
    assert new["topic"] == "io.pagure.prod.pagure.pull-request.new"
    assert new["msg"] == {"agent": "alice", "pullrequest": pr}
    again = messages.pr_new(pr, prefix="org.fedoraproject.prod.pagure")
    assert again["topic"] == "org.fedoraproject.prod.pagure.pull-request.new"
    assert again["msg_id"] != new["msg_id"] and again["i"] > new["i"]


def test_pr_comment_puts_the_new_comment_last(pagure, pr):
    pagure.add_comment("pungi", 235, "first", "bob")
    pr = pagure.pr("pungi", 235)
    msg = messages.pr_comment(pr, "[citest]", "lsedlar")["msg"]
    assert msg["agent"] == "lsedlar"
    assert [c["comment"] for c in msg["pullrequest"]["comments"]] == ["first", "[citest]"]
    assert msg["pullrequest"]["comments"][-1]["notification"] is False
    assert pagure.comments("pungi", 235)[-1]["comment"] == "first"  # the builder changes nothing


def test_pr_closed_and_flag_added(pagure, pr):
    closed = messages.pr_closed(pr, merged=False)
    assert closed["msg"]["merged"] is False and closed["msg"]["pullrequest"]["status"] == "Closed"
    post(pagure, "pungi/pull-request/235/flag", data=FLAG)
    [flag] = pagure.flags("pungi", 235)
    env = messages.pr_flag_added(pagure.pr("pungi", 235), flag)
    assert env["topic"] == "io.pagure.prod.pagure.pull-request.flag.added"
    assert env["msg"]["agent"] == "cibot" and set(env["msg"]["flag"]) == APPENDIX_FLAG_KEYS
    assert env["msg"]["flag"]["user"]["name"] == "cibot"


def test_fixture_loads():
    assert messages.fixture("pagure.pull-request.new.1")["topic"].endswith("pull-request.new")


def test_the_pagure_recording_loads_in_order():
    raw = list(messages.recording(envelopes=False))
    envs = list(messages.recording())
    assert len(raw) == len(envs) == 167
    assert [r["received"] for r in raw] == sorted(r["received"] for r in raw)
    first = envs[0]
    assert set(first) == {"topic", "msg", "msg_id", "timestamp", "i"}
    assert (first["topic"], first["msg_id"], first["msg"]) == (raw[0]["topic"], raw[0]["id"], raw[0]["body"])
    topics = [e["topic"].removeprefix("io.pagure.prod.pagure.") for e in envs]
    assert topics.count("pull-request.new") == 7 and topics.count("pull-request.updated") == 9
