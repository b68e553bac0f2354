"""The core's own PostgreSQL tests (`cargo test`: the store's claims, unique
keys and migrations with several connections, the status page's queries)
against this session's real PostgreSQL: `cargo test` alone skips them, as it
has no server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgresql_only

ROOT = Path(__file__).resolve().parent.parent


def test_the_cores_postgresql_tests_pass_on_a_real_server(postgresql):
    env = {k: v for k, v in os.environ.items() if k != "PYO3_BUILD_EXTENSION_MODULE"}
    env.update(POORMANCI_TEST_PG_DSN=postgresql.dsn(postgresql.database("core_tests")),
               POORMANCI_TEST_PG_PASSWORD_FILE=str(postgresql.password_file))
    r = subprocess.run(["cargo", "test", "--lib", "--", "postgres", "--nocapture"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    # They ran, not skipped for want of a server.
    assert "POORMANCI_TEST_PG_DSN not set" not in r.stdout + r.stderr
    assert "passed" in r.stdout and " 0 passed" not in r.stdout, r.stdout[-2000:]
