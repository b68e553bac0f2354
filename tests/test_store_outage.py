"""The PostgreSQL store goes away (a restart, a failover) while a hub runs:
its connection is cut and new ones are refused for a while. Nothing is lost:
the message that came meanwhile waits in memory, nothing is sent for it
until it is recorded, and the hub reconnects by itself."""

from __future__ import annotations

import pytest

import messages
import postgres
from harness import wait_until
from test_reliability import pr_url, triggers_for

pytestmark = pytest.mark.postgresql_only


def succeeded(pagure, pr_id: int) -> bool:
    return any(f["status"] == "success" for f in pagure.flags("pungi", pr_id))


def test_a_database_outage_loses_nothing_and_the_hub_reconnects(jenkins, pagure, make_config, hub_factory,
                                                                  postgresql, tmp_path):
    db = postgres.database_for(tmp_path / "outage")
    hub = hub_factory(make_config(jenkins, pagure, store=postgresql.store_config(db, lease=5)))
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 1, author="alice")))
    wait_until(lambda: succeeded(pagure, 1), 20, "PR 1 reported")

    # The database goes away: connections cut, new ones refused.
    postgresql.psql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
    postgresql.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
    mark = hub.log_mark()
    hub.publish(messages.pr_new(pagure.add_pr("pungi", 2, author="alice")))
    hub.wait_for_log(r"WARNING poormanci .*waits in memory until the state store can record it", since=mark)
    assert not triggers_for(jenkins, pr_url(pagure, 2)), "triggered before it was recorded"

    postgresql.psql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
    hub.wait_for_log(r"INFO poormanci .*recorded after waiting", 30, since=mark)
    wait_until(lambda: succeeded(pagure, 2), 30, "PR 2 reported once the store is back")
    assert len(triggers_for(jenkins, pr_url(pagure, 2))) == 1
    assert hub.alive()
