"""A state store that cannot record (locked by another process, as when the
disk is full or the file read-only): the message is kept in memory, said once,
and recorded and built once the store can take it (issue 12, 4)."""

import sqlite3
from pathlib import Path

import pytest

import messages


@pytest.mark.sqlite_only("another process write-locks the SQLite file")
def test_a_message_waits_in_memory_until_the_store_can_record_it(jenkins, pagure, make_config, hub_factory,
                                                                  wait_until):
    config = make_config(jenkins, pagure)
    hub = hub_factory(config)
    db = Path(config["poormanci.state_dir"]) / "poormanci.sqlite3"
    # Another process holds the store's write lock: nothing can be written.
    locker = sqlite3.connect(db, isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        env = messages.pr_new(pagure.add_pr("pungi", 70, author="alice"))
        hub.publish(env)
        hub.wait_for_log(rf"WARNING poormanci .*msg {env['msg_id']} \S+: waits in memory until the state store can "
                         r"record it: cannot start a transaction: database is locked", timeout=30)
        assert jenkins.triggers == []
    finally:
        locker.rollback()
        locker.close()
    hub.wait_for_log(rf"msg {env['msg_id']} \S+: recorded after waiting", timeout=30)
    wait_until(lambda: [f for f in pagure.flags("pungi", 70) if f["status"] == "success"], 30, "the result")
    assert len(jenkins.triggers) == 1
    # Said once, however long it waited.
    assert hub.log_text().count(f"msg {env['msg_id']} {env['topic']}: waits in memory") == 1
