# poormanci configuration for fedmsg-hub.
#
# Copy to /etc/fedmsg.d/poormanci.py, fill in the URLs and tokens, then
# `systemctl restart fedmsg-hub`. fedmsg merges every /etc/fedmsg.d/*.py
# `config` dict into one; the keys below are poormanci's. The config is
# checked once when the hub starts: a wrong key is reported on one line in
# `journalctl -u fedmsg-hub` (or run `poormanci check-config`).
# Durations are seconds (int or float). Keys marked "default" may be left out.

config = {
    # The consumer's on/off switch (moksha's config_key).
    "poormanci.enabled": True,

    "poormanci.pagure": {
        # Base URL of the Pagure instance, no trailing /api.
        "url": "https://pagure.io",
        # API token with the ACLs pull_request_comment and pull_request_flag.
        # Sent only in the Authorization header, never logged.
        "token": "CHANGEME",
        # Bus topic prefix of this Pagure (default "io.pagure.prod.pagure";
        # src.fedoraproject.org sends "org.fedoraproject.prod.pagure").
        "topic": "io.pagure.prod.pagure",
        # Name shown on the flag in the PR (default "Jenkins").
        "flag_name": "Jenkins",
        # Also post a comment with each result (default True). Flags always.
        "comment": True,
        # The Pagure user the token belongs to (default None). Its own
        # comments are never read as updates or commands.
        "user": None,
        # Per-request timeout (default 30).
        "timeout": 30,
        # CA bundle (PEM file) for a private CA (default None: the system's
        # trust store). "insecure": True turns TLS verification off: only
        # for a test instance; it is logged as a warning at every start.
        "ca_bundle": None,
        "insecure": False,
    },

    "poormanci.jenkins": {
        # Base URL of Jenkins.
        "url": "https://jenkins.example.org",
        # Bus topic prefix of Jenkins' fedmsg notifier
        # (default "org.fedoraproject.prod.jenkins").
        "topic": "org.fedoraproject.prod.jenkins",
        # Optional HTTP basic auth: a Jenkins user and its API token (both or
        # neither). Without them the job's trigger token alone is used.
        "user": None,
        "api_token": None,
        # Where triggers go: "job" (default, /job/<job>/buildWithParameters)
        # or "buildByToken" (the build-token-root plugin's route: the job
        # token alone, for a Jenkins where anonymous has no Overall/Read).
        # With buildByToken, following builds still needs a user and
        # api_token with Overall/Read and Job/Read.
        "trigger_route": "job",
        # Follow triggered builds by polling Jenkins (default True), so no bus
        # plugin is needed and a lost bus message loses no result. The bus
        # message, when it comes, only makes the follow look now.
        "follow": True,
        # A job with a build in flight is looked at every poll_interval
        # seconds (one request for all its builds), within a ceiling of
        # requests per second to Jenkins.
        "poll_interval": 2,
        "max_requests_per_second": 20,
        # A build still queued after queue_timeout, or still running after
        # build_timeout, is reported as an error (defaults 1 h and 6 h).
        "queue_timeout": 3600,
        "build_timeout": 21600,
        # Requests in flight to Jenkins at once (default 32); Pagure has the
        # same limit.
        "concurrency": 32,
        "timeout": 30,
        "ca_bundle": None,
        "insecure": False,
    },

    # Projects to build: Pagure path "[namespace/]name" -> its Jenkins jobs.
    # "job" is the job path ("folder/job" for a job in a folder); "token" is
    # the job's "Trigger builds remotely" token; "display_name" (default: the
    # last part of the job path, or the top folder's name for a job in a
    # folder) is the name Jenkins' bus messages use for it.
    # "branches" (default: all) lists the target branches a job builds PRs
    # into, as regular expressions matching the whole name ("f4[0-9]" is
    # f40..f49, not f410); /retest and /test follow it too. "parameters"
    # adds fixed build parameters (not REPO, BRANCH, BRANCH_TO, cause or
    # token: poormanci sets those).
    "poormanci.projects": {
        "pungi": [
            {"job": "pungi-pr", "token": "CHANGEME"},
            {"job": "pungi-py312", "token": "CHANGEME",
             "branches": ["main", "f4[0-9]"], "parameters": {"PYTHON": "3.12"}},
        ],
        "rpms/python-foo": [
            {"job": "folder/python-foo", "token": "CHANGEME", "display_name": "folder"},
        ],
    },

    # What a trusted person's /ok-to-test approves: "commit" (default), the
    # commit the approver saw, so each later push of an untrusted author
    # waits again; or "pull-request", its later commits too.
    "poormanci.approve": "commit",

    # Where the state store (SQLite) lives: work not yet done survives a
    # restart there. Must be writable by the fedmsg-hub user.
    "poormanci.state_dir": "/var/lib/poormanci",

    # How long a request that keeps failing (5xx, 429, timeout, connection
    # refused) is retried, with exponential backoff, before it is given up
    # and logged (default 3600).
    "poormanci.retry_deadline": 3600,

    # The status page, /metrics and /healthz (off without "listen"). Keep it on
    # 127.0.0.1 behind your reverse proxy; waiting flags link to public_url.
    # "poormanci.web": {
    #     "listen": "127.0.0.1:8950",
    #     "public_url": "https://ci.example.org/poormanci",
    #     "history_days": 90,
    # },
}
