"""The design poormanci replaced, kept as the benchmark's baseline: a plain
Python fedmsg consumer that makes its HTTP call to Jenkins inside
``consume()``, one message after another.

Only what the burst benchmark needs: a new or updated pull request on a
configured project triggers its jobs with ``buildWithParameters`` (token in
the form, as poormanci sends it). No state, no retries, no Pagure flags:
the cheapest a synchronous consumer can be. bench/run.py runs it through the
real fedmsg-hub with ``fedmsg-hub --with-consumers baseline:Baseline``
(bench/ on PYTHONPATH); it is not installed and has no entry point.
"""

import logging

import fedmsg.consumers
import requests

log = logging.getLogger("baseline")


class Baseline(fedmsg.consumers.FedmsgConsumer):
    config_key = "baseline.enabled"
    topic = []

    def __init__(self, hub):
        config = hub.config
        pagure = config["poormanci.pagure"]
        self.jenkins = config["poormanci.jenkins"]["url"].rstrip("/")
        self.pagure = pagure["url"].rstrip("/")
        self.prefix = pagure.get("topic", "io.pagure.prod.pagure") + ".pull-request."
        self.timeout = config["poormanci.jenkins"].get("timeout", 30)
        self.projects = config["poormanci.projects"]
        self.topic = [self.prefix]
        super().__init__(hub)

    def consume(self, message):
        topic, body = message.get("topic") or "", message.get("body") or {}
        msg_id = body.get("msg_id")
        if topic[len(self.prefix):] not in ("new", "updated", "rebased"):
            return log.debug("msg %s %s: ignored", msg_id, topic)
        pr = body["msg"]["pullrequest"]
        project = pr["project"]
        path = f"{project['namespace']}/{project['name']}" if project.get("namespace") else project["name"]
        jobs = self.projects.get(path)
        if not jobs:
            return log.debug("msg %s %s: ignored: %s is not configured", msg_id, topic, path)
        repo_from = pr.get("repo_from")
        if repo_from is None:
            repo = pr["remote_git"]
        elif repo_from.get("parent"):
            repo = f"{self.pagure}/forks/{repo_from['user']['name']}/{path}.git"
        else:
            repo = f"{self.pagure}/{path}.git"
        pr_url = f"{self.pagure}/{path}/pull-request/{pr['id']}"
        for job in jobs:
            url = self.jenkins + "".join(f"/job/{part}" for part in job["job"].split("/"))
            r = requests.post(f"{url}/buildWithParameters", timeout=self.timeout, allow_redirects=False, data={
                "token": job["token"], "cause": pr_url, "REPO": repo,
                "BRANCH": pr["branch_from"], "BRANCH_TO": pr["branch"]})
            log.info("msg %s %s: trigger %s for %s#%s: %s", msg_id, topic, job["job"], path, pr["id"], r.status_code)
