"""The Jenkins side: the JJB job definition and the merge script it runs.

The YAML is rendered by the real `jenkins-jobs test` (offline, no Jenkins).
merge-pr.sh runs for real with bash and git: the PR's fork is served by
`git daemon` on 127.0.0.1, so the script is tested through the same
`git://` URL path a Jenkins job takes, with no test-only bypass in it.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

JENKINS_DIR = Path(__file__).resolve().parents[1] / "contrib" / "jenkins"
YAML = JENKINS_DIR / "poormanci-job.yaml"
SCRIPT = JENKINS_DIR / "merge-pr.sh"

HAVE_JJB = importlib.util.find_spec("jenkins_jobs") is not None
needs_jjb = pytest.mark.skipif(
    not HAVE_JJB,
    reason="jenkins-job-builder not installed (pip install jenkins-job-builder)",
)


# ---------------------------------------------------------------- JJB YAML


def render(yaml_path, tmp_path):
    """Render with `jenkins-jobs test`; return {job name: XML root}."""
    # An empty config file, so a developer's /etc/jenkins_jobs/jenkins_jobs.ini
    # cannot change the output.
    conf = tmp_path / "jjb.ini"
    conf.write_text("[job_builder]\n")
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "jenkins_jobs", "--conf", str(conf),
         "test", "--config-xml", "-o", str(out), str(yaml_path)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    return {p.parent.name: ET.parse(p).getroot() for p in out.glob("*/config.xml")}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    jobs = render(YAML, tmp_path_factory.mktemp("jjb"))
    assert list(jobs) == ["pungi-pr"]
    return jobs["pungi-pr"]


def shell_commands(root):
    return [e.findtext("command") for e in root.find("builders")]


@needs_jjb
def test_job_parameters(job):
    params = {
        p.findtext("name"): (p.tag, p.findtext("defaultValue") or "", p.findtext("description"))
        for p in job.find("properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions")
    }
    string = "hudson.model.StringParameterDefinition"
    assert {k: v[:2] for k, v in params.items()} == {
        "REPO": (string, ""),
        "BRANCH": (string, ""),
        "BRANCH_TO": (string, "master"),
        "COMMIT": (string, ""),
    }
    assert all(desc for _, _, desc in params.values())


@needs_jjb
def test_job_trigger_token_and_scm(job):
    assert job.tag == "project"  # freestyle
    assert job.findtext("authToken") == "CHANGEME"
    assert job.findtext("scm/userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url") == \
        "https://pagure.io/pungi.git"
    # The default refspec fetches every head, so origin/$BRANCH_TO exists.
    assert job.findtext("scm/userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/refspec") == \
        "+refs/heads/*:refs/remotes/origin/*"


@needs_jjb
def test_job_runs_merge_script_then_tests(job):
    # Verbatim: byte for byte the script tested below, ${...} untouched.
    assert shell_commands(job) == [SCRIPT.read_text(), "make test"]


@needs_jjb
def test_job_fedmsg_publisher(job):
    tags = [e.tag for e in job.find("publishers")]
    assert tags == ["org.fedoraproject.jenkins.plugins.fedmsg.FedmsgEmitter"]


@needs_jjb
def test_job_test_command_is_a_variable(tmp_path):
    # A second project using the template with its own test command.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SCRIPT, src)
    (src / YAML.name).write_text(YAML.read_text() + """
- project:
    name: other
    git-url: https://pagure.io/other.git
    trigger-token: T2
    test-command: tox -e py3
    jobs:
      - '{name}-pr'
""")
    jobs = render(src / YAML.name, tmp_path)
    assert shell_commands(jobs["other-pr"])[1] == "tox -e py3"
    assert jobs["other-pr"].findtext("authToken") == "T2"
    assert shell_commands(jobs["pungi-pr"])[1] == "make test"


# ------------------------------------------------------------ merge-pr.sh


def git(cwd, *args, env=None):
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo, name, content, env):
    (repo / name).write_text(content)
    git(repo, "add", name, env=env)
    git(repo, "commit", "-q", "-m", f"change {name}", env=env)
    return git(repo, "rev-parse", "HEAD", env=env)


@pytest.fixture
def base_env(tmp_path):
    """An environment with no user git config (HOME is empty) and an `evil`
    command on PATH that leaves a marker if anything ever runs it."""
    home = tmp_path / "home"
    bin_dir = tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    evil = bin_dir / "evil"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path / 'EVIL_RAN'}\n")
    evil.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1",
               PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    return env


@pytest.fixture
def repos(tmp_path, base_env):
    """origin (master, stable), a fork with PR branches, and `work`: a clone
    of origin standing for the Jenkins workspace, one commit behind origin's
    master being fetched so the merge is a real two-sided one."""
    author = dict(base_env, GIT_AUTHOR_NAME="Dev", GIT_AUTHOR_EMAIL="dev@example.org",
                  GIT_COMMITTER_NAME="Dev", GIT_COMMITTER_EMAIL="dev@example.org")
    served = tmp_path / "served"
    origin, fork, work = served / "origin", served / "fork", tmp_path / "work"
    served.mkdir()
    git(served, "init", "-q", "-b", "master", "origin", env=author)
    commit(origin, "README", "hello\n", author)
    git(origin, "branch", "stable", env=author)
    git(served, "clone", "-q", "origin", "fork", env=author)
    git(fork, "checkout", "-q", "-b", "fix-thing", env=author)
    pr_tip = commit(fork, "fix.txt", "fixed\n", author)
    git(fork, "checkout", "-q", "-b", "conflicting", "master", env=author)
    commit(fork, "README", "hello from the fork\n", author)
    master = commit(origin, "README", "hello from master\n", author)
    git(tmp_path, "clone", "-q", str(origin), "work", env=author)
    # A previous branch, so "@{-1}" means something in the workspace.
    git(work, "checkout", "-q", "-b", "previous", env=author)
    git(work, "checkout", "-q", "master", env=author)
    return {"work": work, "served": served, "pr_tip": pr_tip, "master": master,
            "stable": git(origin, "rev-parse", "stable", env=author), "author": author}


@pytest.fixture
def daemon_url(repos, base_env, tmp_path):
    """Serve repos["served"] read-only with `git daemon` on 127.0.0.1."""
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = open(tmp_path / "git-daemon.log", "w")
        proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
             f"--port={port}", f"--base-path={repos['served']}", str(repos["served"])],
            env=base_env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"git://127.0.0.1:{port}/fork"
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            probe = subprocess.run(["git", "ls-remote", url], env=base_env,
                                   capture_output=True)
            if probe.returncode == 0:
                yield url
                proc.terminate()
                proc.wait(timeout=10)
                return
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    pytest.fail("git daemon did not start: " + (tmp_path / "git-daemon.log").read_text())


def run_script(work, env, **params):
    env = dict(env)
    for name in ("REPO", "BRANCH", "BRANCH_TO", "COMMIT"):
        env.pop(name, None)
    env.update(params)
    return subprocess.run(["bash", str(SCRIPT)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("branch_to", [None, "", "master"])
def test_merges_pr_onto_master(repos, daemon_url, base_env, branch_to):
    work = repos["work"]
    params = {"REPO": daemon_url, "BRANCH": "fix-thing"}
    if branch_to is not None:
        params["BRANCH_TO"] = branch_to
    r = run_script(work, base_env, **params)
    assert r.returncode == 0, r.stderr
    # A merge commit whose parents are origin's master and the PR tip.
    assert git(work, "rev-parse", "HEAD^1") == repos["master"]
    assert git(work, "rev-parse", "HEAD^2") == repos["pr_tip"]
    assert git(work, "log", "-1", "--format=%s%n%cn") == "Merge PR\npoormanci"
    assert (work / "fix.txt").read_text() == "fixed\n"
    assert (work / "README").read_text() == "hello from master\n"
    # The build log names what was tested.
    head = git(work, "rev-parse", "HEAD")
    assert head in r.stdout and repos["pr_tip"] in r.stdout


def test_merges_pr_onto_other_target(repos, daemon_url, base_env):
    work = repos["work"]
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="fix-thing", BRANCH_TO="stable")
    assert r.returncode == 0, r.stderr
    assert git(work, "rev-parse", "HEAD^1") == repos["stable"]
    assert git(work, "rev-parse", "HEAD^2") == repos["pr_tip"]
    assert (work / "README").read_text() == "hello\n"


def test_rerun_replaces_proposed_remote(repos, daemon_url, base_env):
    # A reused workspace already has a "proposed" remote from a last build.
    work = repos["work"]
    git(work, "remote", "add", "proposed", "https://old.example.org/x.git")
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="fix-thing")
    assert r.returncode == 0, r.stderr
    assert git(work, "remote", "get-url", "proposed") == daemon_url


def test_conflict_fails_cleanly(repos, daemon_url, base_env):
    work = repos["work"]
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="conflicting")
    assert r.returncode == 1
    assert "does not merge cleanly" in r.stderr
    assert not (work / ".git" / "MERGE_HEAD").exists()
    assert git(work, "status", "--porcelain") == ""


def test_no_pr_does_nothing(repos, base_env):
    work = repos["work"]
    before = git(work, "rev-parse", "HEAD")
    r = run_script(work, base_env, REPO="", BRANCH="", BRANCH_TO="")
    assert r.returncode == 0, r.stderr
    assert git(work, "rev-parse", "HEAD") == before
    assert before in r.stdout
    assert git(work, "remote") == "origin"


REFUSED = [
    {"BRANCH": "-x"},
    {"BRANCH": "a..b"},
    {"BRANCH": "foo bar"},
    {"BRANCH": "a\nb"},
    {"BRANCH": "@{-1}"},          # check-ref-format --branch would expand it
    {"BRANCH_TO": "-x"},
    {"BRANCH_TO": "a..b"},
    {"REPO": "--upload-pack=evil"},
    {"REPO": "ext::sh -c evil"},
    {"REPO": "ext::evil"},
    {"REPO": "LOCAL"},            # a path on the Jenkins host
    {"REPO": "file://LOCAL"},
    {"REPO": "git://127.0.0.1/x\n--upload-pack=evil"},
    {"REPO": "https://example.org/a b"},
    {"REPO": "ssh://evil"},
    {"COMMIT": "abc1234"},        # abbreviated: ambiguous
    {"COMMIT": "HEAD"},
    {"COMMIT": "--upload-pack=evil"},
    {"COMMIT": "3F2A9C1E5B7D4E6F8A9B0C1D2E3F4A5B6C7D8E9F"},
    {"COMMIT": "g" * 40},
    {"COMMIT": "3f2a9c1e5b7d4e6f8a9b0c1d2e3f4a5b6c7d8e9f\n"},
    {"COMMIT": "3f2a9c1e5b7d4e6f8a9b0c1d2e3f4a5b6c7d8e9f", "REPO": "", "BRANCH": ""},
    {"BRANCH": ""},               # REPO without BRANCH
    {"REPO": ""},                 # BRANCH without REPO
]


@pytest.mark.parametrize("bad", REFUSED, ids=repr)
def test_refuses_bad_input(repos, daemon_url, base_env, tmp_path, bad):
    work = repos["work"]
    local = str(repos["served"] / "fork")
    # Everything else valid and reachable: had the check not refused, the
    # fetch would have worked.
    params = {"REPO": daemon_url, "BRANCH": "fix-thing", "BRANCH_TO": "master"}
    params.update({k: v.replace("LOCAL", local) for k, v in bad.items()})
    before = git(work, "rev-parse", "HEAD")
    r = run_script(work, base_env, **params)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("merge-pr: refused: ")
    assert r.stderr.count("\n") == 1
    # Nothing happened: no remote, no fetch, no checkout, nothing run.
    assert git(work, "remote") == "origin"
    assert not (work / ".git" / "FETCH_HEAD").exists()
    assert git(work, "rev-parse", "HEAD") == before
    assert not (tmp_path / "EVIL_RAN").exists()


# ------------------------------------------------ COMMIT: the commit poormanci decided on


def test_commit_at_the_tip_is_merged(repos, daemon_url, base_env):
    work = repos["work"]
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="fix-thing", COMMIT=repos["pr_tip"])
    assert r.returncode == 0, r.stderr
    assert git(work, "rev-parse", "HEAD^2") == repos["pr_tip"]
    assert f"PR commit  {repos['pr_tip']}" in r.stdout


def test_commit_behind_the_tip_is_merged_not_the_tip(repos, daemon_url, base_env):
    # A push after poormanci decided: the build still tests the commit its
    # flag names, not the newer tip.
    work, fork = repos["work"], repos["served"] / "fork"
    git(fork, "checkout", "-q", "fix-thing", env=repos["author"])
    newer = commit(fork, "later.txt", "pushed later\n", repos["author"])
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="fix-thing", COMMIT=repos["pr_tip"])
    assert r.returncode == 0, r.stderr
    assert git(work, "rev-parse", "HEAD^2") == repos["pr_tip"]
    assert not (work / "later.txt").exists()
    assert (work / "fix.txt").read_text() == "fixed\n"
    assert f"tip {newer}" in r.stdout
    # Without COMMIT the tip is what gets built.
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="fix-thing")
    assert r.returncode == 0, r.stderr
    assert git(work, "rev-parse", "HEAD^2") == newer


@pytest.mark.parametrize("which", ["other-branch", "target-branch", "rewritten-away", "unknown"])
def test_commit_not_on_branch_is_refused(repos, daemon_url, base_env, which):
    work, fork, author = repos["work"], repos["served"] / "fork", repos["author"]
    if which == "other-branch":        # in the fork, on another branch
        bad = git(fork, "rev-parse", "conflicting", env=author)
    elif which == "target-branch":     # in the workspace already, not on the PR branch
        bad = repos["master"]
    elif which == "rewritten-away":    # the tip poormanci saw, then a force-push
        bad = repos["pr_tip"]
        git(fork, "checkout", "-q", "fix-thing", env=author)
        git(fork, "reset", "-q", "--hard", "HEAD^", env=author)
        commit(fork, "fix.txt", "fixed differently\n", author)
        git(fork, "reflog", "expire", "--expire=now", "--all", env=author)
        git(fork, "gc", "-q", "--prune=now", env=author)
    else:
        bad = "0123456789abcdef0123456789abcdef01234567"
    before = git(work, "rev-parse", "HEAD")
    r = run_script(work, base_env, REPO=daemon_url, BRANCH="fix-thing", COMMIT=bad)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"merge-pr: refused: COMMIT {bad} is not on BRANCH fix-thing (tip ")
    assert r.stderr.count("\n") == 1
    # Nothing merged or checked out.
    assert git(work, "rev-parse", "HEAD") == before
    assert not (work / ".git" / "MERGE_HEAD").exists()
