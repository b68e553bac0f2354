"""The status page, JSON API, /metrics and /healthz (issue 15), through the
real fedmsg-hub: what a person, a script and a monitoring system see after a
few pull requests, read over real HTTP; and in a real browser (headless
Chromium) when it is installed."""

from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
import socket
import subprocess
import time

import pytest
import requests

import messages
from harness import free_port
from standins import FakeJenkins

# Distinctive credentials: none of them may ever appear on a page.
JOB_TOKENS = {"pungi-pr": "pungi-TRIGGER-SECRET-1", "folder/python-foo": "foo-TRIGGER-SECRET-2"}
PAGURE_TOKEN_NAME = "token"
HOSTILE_TITLE = '<script>alert("pwned")</script> & "quotes" <b>bold</b>'
HOSTILE_TITLE_2 = '"><img src=x onerror=alert(1)>'


@pytest.fixture
def jenkins():
    with FakeJenkins(JOB_TOKENS) as server:
        yield server


def web_config(make_config, jenkins, pagure, port, **web):
    web = {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", **web}
    config = make_config(jenkins, pagure, web=web, retry_deadline=600)
    config["poormanci.projects"] = {"pungi": [{"job": "pungi-pr", "token": JOB_TOKENS["pungi-pr"]}],
                                    "rpms/python-foo": [{"job": "folder/python-foo", "token": JOB_TOKENS["folder/python-foo"]}]}
    return config


def final_flag(pagure, project, pr_id):
    return [f for f in pagure.flags(project, pr_id) if f["status"] != "pending"]


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of the exposition ``text`` (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))).strip(",") == want:
            return float(m.group(3))
    return 0.0


@pytest.fixture
def scene(jenkins, pagure, make_config, hub_factory, wait_until):
    """Four PRs: one built (passed), one failing, one waiting for /ok-to-test,
    one whose trigger is being retried against a failing Jenkins."""
    port = free_port()
    pagure.add_project("pungi", owner="ralph")
    hub = hub_factory(web_config(make_config, jenkins, pagure, port))
    base = f"http://127.0.0.1:{port}"
    passed = pagure.add_pr("pungi", 1, author="alice", title="Fix the thing")
    hub.publish(messages.pr_new(passed))
    wait_until(lambda: final_flag(pagure, "pungi", 1), message="PR 1's result")
    jenkins.next_result("pungi-pr", "FAILURE")
    failing = pagure.add_pr("pungi", 2, author="bob", title=HOSTILE_TITLE)
    hub.publish(messages.pr_new(failing))
    wait_until(lambda: final_flag(pagure, "pungi", 2), message="PR 2's result")
    waiting = pagure.add_pr("pungi", 3, author="mallory", title=HOSTILE_TITLE_2)
    hub.publish(messages.pr_new(waiting))
    wait_until(lambda: pagure.flags("pungi", 3), message="PR 3's pending flag")
    jenkins.fail_next(10_000)  # Jenkins answers 500 to everything from now on
    retried = pagure.add_pr("rpms/python-foo", 4, author="carol", title="Bump the spec")
    hub.publish(messages.pr_new(retried))
    wait_until(lambda: [r for r in jenkins.requests if r.failed and "buildWithParameters" in r.path],
               message="a failed trigger")
    wait_until(lambda: "retrying" in requests.get(f"{base}/api/v1/runs?project=rpms/python-foo", timeout=5).text,
               message="the retry on record")
    return base, hub


def test_pages_json_and_metrics_show_each_pr(scene, jenkins, pagure, wait_until):
    base, hub = scene
    index = requests.get(f"{base}/", timeout=5)
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in index.headers["content-security-policy"]
    raw = index.text
    # Hostile titles are shown as text, never as markup (the template engine
    # escapes < > & " ' and /); the words below are read from the unescaped page.
    assert "<script" not in raw and "<img" not in raw and "<b>bold" not in raw
    page = html.unescape(raw)
    assert HOSTILE_TITLE in page and HOSTILE_TITLE_2 in page
    for words in ["passed", "failed", "waiting for /ok-to-test", "retrying", "Fix the thing", "Bump the spec"]:
        assert words in page, words
    assert 'href="/pungi/pull-request/2"' in page and 'href="/rpms/python-foo/pull-request/4"' in page
    assert raw.count("<svg") == 2  # a chart per project
    assert re.search(r"<strong>1</strong> waiting for /ok-to-test", page)
    assert re.search(r"<strong>1</strong> retrying", page)
    assert jenkins.build_url("pungi-pr", 1) in page

    # The PR pages say why: waiting, retried (with the error and the next try), failed.
    waiting_raw = requests.get(f"{base}/pungi/pull-request/3", timeout=5).text
    assert "<img" not in waiting_raw
    waiting = html.unescape(waiting_raw)
    assert "Waiting for a trusted person to comment /ok-to-test" in waiting
    assert "new pull request by mallory" in waiting
    retried = html.unescape(requests.get(f"{base}/rpms/python-foo/pull-request/4", timeout=5).text)
    assert "Jenkins has not taken the build yet" in retried
    assert re.search(r"The trigger request failed \d+ time\(s\): <samp>[^<]*500", retried), retried
    assert "Next try at" in retried
    failed = html.unescape(requests.get(f"{base}/pungi/pull-request/2", timeout=5).text)
    assert "Build #2 failed" in failed and jenkins.build_url("pungi-pr", 2) in failed

    # The same as JSON.
    projects = {p["project"]: p for p in requests.get(f"{base}/api/v1/projects", timeout=5).json()["projects"]}
    assert projects["pungi"]["counts"] == {"waiting_for_approval": 1, "starting": 0, "queued": 0, "running": 0, "retrying": 0}
    assert projects["rpms/python-foo"]["counts"]["retrying"] == 1
    runs = requests.get(f"{base}/api/v1/runs", params={"project": "pungi"}, timeout=5).json()["runs"]
    assert [(r["pr"], r["status"]) for r in runs] == [(3, "waiting for /ok-to-test"), (2, "failed"), (1, "passed")]
    pr2 = requests.get(f"{base}/api/v1/pungi/pull-request/2", timeout=5).json()
    assert pr2["title"] == HOSTILE_TITLE and pr2["author"] == "bob"
    assert pr2["runs"][0]["outcome"]["result"] == "FAILURE" and pr2["runs"][0]["duration"] is not None
    pr4 = requests.get(f"{base}/api/v1/rpms/python-foo/pull-request/4", timeout=5).json()
    assert pr4["runs"][0]["retry"]["kind"] == "trigger" and "500" in pr4["runs"][0]["retry"]["last_error"]

    # Waiting flags link to the PR's status page; the running and final ones to Jenkins.
    (pending,) = pagure.flags("pungi", 3)
    assert pending["url"] == f"{base}/pungi/pull-request/3"
    queued = [h for h in pagure.flag_history if h["id"] == 1 and h["data"]["comment"] == "Build queued"]
    assert queued and queued[0]["data"]["url"] == f"{base}/pungi/pull-request/1"
    assert final_flag(pagure, "pungi", 1)[0]["url"] == jenkins.build_url("pungi-pr", 1)

    # /metrics: the counters of this process and the gauges of the store.
    text = requests.get(f"{base}/metrics", timeout=5).text
    assert metric(text, "poormanci_messages_total", outcome="trigger") == 4
    assert metric(text, "poormanci_triggers_total", project="pungi", job="pungi-pr", result="queued") == 2
    assert metric(text, "poormanci_reports_total", project="pungi", job="pungi-pr", result="success") == 1
    assert metric(text, "poormanci_reports_total", project="pungi", job="pungi-pr", result="failure") == 1
    assert metric(text, "poormanci_retries_total", kind="trigger") >= 1
    assert metric(text, "poormanci_requests_total", peer="jenkins", **{"class": "5xx"}) >= 1
    assert metric(text, "poormanci_requests_total", peer="pagure", **{"class": "2xx"}) >= 4
    assert metric(text, "poormanci_runs", project="pungi", state="gated") == 1
    assert metric(text, "poormanci_runs", project="pungi", state="done") == 2
    assert metric(text, "poormanci_runs", project="rpms/python-foo", state="triggering") == 1
    assert metric(text, "poormanci_tasks_pending", kind="trigger") == 1
    assert metric(text, "poormanci_task_oldest_age_seconds", kind="trigger") >= 0
    assert metric(text, "poormanci_trigger_latency_seconds_count", project="pungi") == 2
    assert metric(text, "poormanci_flag_latency_seconds_count", project="pungi") == 2

    # No credential anywhere.
    bodies = [page, waiting, retried, failed, text, json.dumps(pr2), json.dumps(pr4),
              requests.get(f"{base}/rpms/python-foo/runs", timeout=5).text]
    for secret in [*JOB_TOKENS.values(), pagure.token]:
        assert not any(secret in b for b in bodies), secret


def test_metrics_pass_promtool(scene):
    base, _ = scene
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    text = requests.get(f"{base}/metrics", timeout=5).text
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.sqlite_only("another process write-locks the SQLite file")
def test_healthz_says_when_the_store_cannot_be_written(jenkins, pagure, make_config, hub_factory, wait_until, tmp_path):
    port = free_port()
    hub = hub_factory(web_config(make_config, jenkins, pagure, port))
    url = f"http://127.0.0.1:{port}/healthz"
    ok = wait_until(lambda: (r := requests.get(url, timeout=5)).status_code == 200 and r.text, message="healthy")
    assert ok.startswith("ok: engine turned")
    # Another process holds the store's write lock: the engine cannot commit.
    locker = sqlite3.connect(tmp_path / "state" / "poormanci.sqlite3", timeout=0, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        bad = wait_until(lambda: (r := requests.get(url, timeout=5)).status_code == 503 and r.text, timeout=20,
                         message="503 while the store is locked")
        assert bad.startswith("unhealthy: ") and "state store: not writable: database is locked" in bad
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_until(lambda: requests.get(url, timeout=5).status_code == 200, timeout=20, message="healthy again")
    assert hub.alive()


OLD_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, project TEXT NOT NULL, pr INTEGER NOT NULL, job TEXT NOT NULL, commit_id TEXT,
    repo TEXT NOT NULL, branch TEXT NOT NULL, branch_to TEXT NOT NULL, pr_url TEXT NOT NULL,
    queue_id INTEGER, build INTEGER, build_url TEXT, state TEXT NOT NULL DEFAULT 'triggering', outcome TEXT,
    created REAL NOT NULL, started REAL, finished REAL);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, run INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    due REAL NOT NULL, deadline REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
"""


def seed_old_store(path, runs):
    """A state file as poormanci wrote it before the status page: finished runs
    of pungi, ``runs`` = [(pr, days_ago)]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    now = time.time()
    for pr, days_ago in runs:
        end = now - days_ago * 86400
        outcome = json.dumps({"kind": "finished", "number": pr, "url": f"http://j/job/pungi-pr/{pr}/", "result": "SUCCESS"})
        db.execute("INSERT INTO runs (project, pr, job, commit_id, repo, branch, branch_to, pr_url, build, state, outcome,"
                   " created, started, finished) VALUES ('pungi', ?, 'pungi-pr', ?, 'r', 'b', 'master', ?, ?, 'done', ?, ?, ?, ?)",
                   (pr, f"{pr:040x}", f"http://p/pungi/pull-request/{pr}", pr, outcome, end - 60, end - 50, end))
    db.commit()
    db.close()


@pytest.mark.sqlite_only("an old SQLite file is migrated")
def test_old_state_file_is_paged_and_pruned(jenkins, pagure, make_config, hub_factory, wait_until, tmp_path):
    # 120 runs of 5 days ago, one of 50 days (kept: 90 by default), one of 100 (pruned).
    seed_old_store(tmp_path / "state" / "poormanci.sqlite3", [(1000, 100), (1001, 50)] + [(i, 5) for i in range(1, 121)])
    port = free_port()
    hub_factory(web_config(make_config, jenkins, pagure, port))
    base = f"http://127.0.0.1:{port}"
    seen, url = [], f"{base}/api/v1/runs?project=pungi&limit=50"
    while url:
        page = requests.get(url, timeout=5).json()
        assert len(page["runs"]) <= 50
        seen += [r["pr"] for r in page["runs"]]
        url = page["next"] and f"{base}{page['next']}"
    assert seen == list(range(120, 0, -1)) + [1001], "newest first, each once, the 100-day-old run pruned"
    first = html.unescape(requests.get(f"{base}/pungi/runs", timeout=5).text)
    older = re.search(r'href="(/pungi/runs\?before=\d+)">Older', first).group(1)
    assert "#71<" in first and "#70<" not in first
    second = html.unescape(requests.get(f"{base}{older}", timeout=5).text)
    assert "#70<" in second and "#21<" in second and "#20<" not in second
    assert requests.get(f"{base}/pungi/runs?before=x", timeout=5).status_code == 400
    assert requests.get(f"{base}/nosuch/pull-request/1", timeout=5).status_code == 404


def test_links_under_a_public_path_and_why_each_run_ran(jenkins, pagure, make_config, hub_factory, wait_until):
    port = free_port()
    pagure.add_project("pungi", owner="ralph")
    hub = hub_factory(web_config(make_config, jenkins, pagure, port, public_url="https://ci.example.org/poormanci/"))
    base = f"http://127.0.0.1:{port}"
    pr = pagure.add_pr("pungi", 7, author="alice")
    hub.publish(messages.pr_new(pr))
    wait_until(lambda: final_flag(pagure, "pungi", 7), message="the result")
    queued = [h for h in pagure.flag_history if h["data"]["comment"] == "Build queued"]
    assert queued[0]["data"]["url"] == "https://ci.example.org/poormanci/pungi/pull-request/7"
    page = html.unescape(requests.get(f"{base}/", timeout=5).text)
    assert 'href="/poormanci/pungi/pull-request/7"' in page and 'href="/poormanci/style.css"' in page

    # Why each run ran: the new PR, then a /retest by a trusted person.
    hub.publish(pagure.add_comment("pungi", 7, "/retest", "alice"))

    def statuses():
        return [r["status"] for r in requests.get(f"{base}/api/v1/pungi/pull-request/7", timeout=5).json()["runs"]]

    wait_until(lambda: statuses() == ["passed", "passed"], message="both runs passed")
    runs = requests.get(f"{base}/api/v1/pungi/pull-request/7", timeout=5).json()["runs"]
    assert [r["reason"] for r in runs] == ["/retest by alice", "new pull request by alice"]

    # Who approved an untrusted author's PR.
    held = pagure.add_pr("pungi", 9, author="mallory")
    hub.publish(messages.pr_new(held))
    wait_until(lambda: pagure.flags("pungi", 9), message="the pending flag")
    hub.publish(pagure.add_comment("pungi", 9, "/ok-to-test", "ralph"))
    wait_until(lambda: final_flag(pagure, "pungi", 9), message="the approved build's result")
    text = html.unescape(requests.get(f"{base}/pungi/pull-request/9", timeout=5).text)
    assert "Approved for testing by <strong>ralph</strong> (/ok-to-test)" in text
    assert requests.get(f"{base}/api/v1/pungi/pull-request/9", timeout=5).json()["approved_by"] == "ralph"


def test_a_port_in_use_is_one_line_and_ci_goes_on(jenkins, pagure, make_config, hub_factory, wait_until):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        hub = hub_factory(web_config(make_config, jenkins, pagure, port))
        hub.wait_for_log(rf"poormanci.web.listen: cannot listen on 127.0.0.1:{port}: .*; running without the status page")
        pr = pagure.add_pr("pungi", 8, author="alice")
        hub.publish(messages.pr_new(pr))
        wait_until(lambda: final_flag(pagure, "pungi", 8), message="the result, without the status page")


# ---- a real browser ----------------------------------------------------------

def chromium_driver(tmp_path):
    """Headless Chromium through chromedriver (Debian's chromium and
    chromium-driver), or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("Chromium and chromedriver are not installed (Debian: chromium chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1800", f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_in_a_real_browser(scene, tmp_path):
    base, _ = scene
    driver = chromium_driver(tmp_path)
    from selenium.webdriver.common.by import By
    try:
        driver.get(f"{base}/")
        assert driver.title == "poormanci"
        body = driver.find_element(By.TAG_NAME, "body").text
        for words in ["passed", "failed", "waiting for /ok-to-test", "retrying", "1 retrying"]:
            assert words in body, words
        assert HOSTILE_TITLE in body, "the hostile title is shown as the text it is"
        assert driver.find_elements(By.TAG_NAME, "script") == [] and driver.find_elements(By.TAG_NAME, "img") == []
        charts = driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")
        assert len(charts) == 2 and charts[0].size["width"] > 200
        assert len(driver.find_elements(By.CSS_SELECTOR, "figure.chart svg rect.success")) >= 1
        # State in colour as well as words: the badges differ.
        colour = {s.text: s.value_of_css_property("background-color") for s in driver.find_elements(By.CSS_SELECTOR, ".state")}
        assert colour["passed"] != colour["failed"] != colour["waiting for /ok-to-test"]
        jenkins_links = [a.get_attribute("href") for a in driver.find_elements(By.LINK_TEXT, "Build #1")]
        assert jenkins_links and jenkins_links[0].endswith("/job/pungi-pr/1/")
        driver.save_screenshot(str(tmp_path / "index.png"))
        assert console_errors(driver) == []

        driver.find_element(By.LINK_TEXT, "#3").click()
        assert driver.current_url == f"{base}/pungi/pull-request/3"
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "pungi#3" in text and "Waiting for a trusted person to comment /ok-to-test" in text
        assert HOSTILE_TITLE_2 in text
        assert driver.find_element(By.LINK_TEXT, "See it on Pagure").get_attribute("href").endswith("/pungi/pull-request/3")
        driver.save_screenshot(str(tmp_path / "pr-waiting.png"))
        assert console_errors(driver) == []

        driver.get(f"{base}/rpms/python-foo/pull-request/4")
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "retrying" in text and "Next try at" in text
        driver.save_screenshot(str(tmp_path / "pr-retrying.png"))
        assert console_errors(driver) == []
    finally:
        driver.quit()
