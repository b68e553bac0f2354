"""Shared fixtures: the stand-ins, a config for them, and the real hub.

tests/ is on sys.path (pytest's rootdir conftest), so tests import the helpers
as ``from harness import Hub, wait_until``, ``import messages``,
``from standins import FakeJenkins, FakePagure``.

The store backend: SQLite, or with POORMANCI_TEST_STORE=postgresql (``make
test-postgresql``) a database per state_dir on one PostgreSQL for the session
(tests/postgres.py), through make_config. Markers: ``sqlite_only(reason)`` for
tests about the SQLite file itself (skipped on PostgreSQL), ``postgresql_only``
for tests that need several instances on PostgreSQL (they run in the
PostgreSQL pass). That pass skips the tests that do not use make_config.
"""

from __future__ import annotations

import functools

import pytest

import harness
import postgres
from standins import FakeJenkins, FakePagure

JOBS = {"pungi-pr": "BEEFCAFE", "folder/python-foo": "F00"}


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only(reason): about the SQLite store itself; skipped on PostgreSQL")
    config.addinivalue_line("markers", "postgresql_only: needs PostgreSQL; runs in the PostgreSQL pass "
                                       f"({harness.STORE_ENV}=postgresql, make test-postgresql)")


def pytest_collection_modifyitems(config, items):
    backend = harness.store_backend()
    for item in items:
        sqlite_only = item.get_closest_marker("sqlite_only")
        if sqlite_only and backend != "sqlite":
            why = sqlite_only.args[0] if sqlite_only.args else "about the SQLite store"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))
        postgresql_only = item.get_closest_marker("postgresql_only")
        if postgresql_only and backend != "postgresql":
            item.add_marker(pytest.mark.skip(reason=f"PostgreSQL pass only ({harness.STORE_ENV}=postgresql, "
                                                    "make test-postgresql)"))
        # The store backend comes in through make_config: a test without it
        # (the stand-ins, the CLI on its own config, the RPM spec) would only
        # run again exactly as in the SQLite pass.
        if backend == "postgresql" and not postgresql_only and "make_config" not in item.fixturenames:
            item.add_marker(pytest.mark.skip(reason="does not use make_config, so not the store backend: "
                                                    "it runs in the SQLite pass"))


@pytest.fixture(scope="session")
def postgresql():
    """The session's PostgreSQL (tests/postgres.py); skips the test when
    none can be started here."""
    reason = postgres.missing()
    if reason:
        pytest.skip(reason)
    yield postgres.shared()
    postgres.stop_shared()


@pytest.fixture
def jenkins():
    with FakeJenkins(JOBS) as server:
        yield server


@pytest.fixture
def pagure():
    with FakePagure() as server:
        yield server


@pytest.fixture
def make_config(tmp_path, request):
    """make_config(jenkins, pagure, **overrides) -> the poormanci.* config dict,
    with its state_dir under this test's tmp_path (see harness.make_config)."""
    if harness.store_backend() == "postgresql":
        request.getfixturevalue("postgresql")  # started once, stopped at the session's end; or a skip
    return functools.partial(harness.make_config, state_dir=tmp_path / "state")


@pytest.fixture
def hub_factory(tmp_path):
    """hub_factory(config, ready=True, **Hub kwargs) -> a started Hub (see
    Hub.start), always stopped at teardown; its log tail is printed (pytest
    shows it when the test failed)."""
    hubs: list[harness.Hub] = []

    def factory(config, ready: bool = True, **kwargs) -> harness.Hub:
        kwargs.setdefault("workdir", tmp_path / f"hub{len(hubs)}")
        hub = harness.Hub(config, **kwargs)
        hubs.append(hub)
        return hub.start(ready=ready)

    yield factory
    for hub in hubs:
        hub.close()
        print(hub.log_tail())


@pytest.fixture
def explain(jenkins, pagure, make_config):
    """explain(envelope, config=None) -> what the core decides for this
    message, one line per decision ("ignore: …", "refuse: …", "trigger …"),
    asked in-process of ``Core(config, dry_run=True)`` (nothing sent, no
    state store): for the rules, rather than matching a hub's log wording.
    ``config`` defaults to make_config(jenkins, pagure)."""
    from poormanci._core import Core

    cores: dict[int, tuple[dict, Core]] = {}  # by id(config); the config kept alive with it
    default: list[dict] = []

    def explain(envelope: dict, config: dict | None = None) -> list[str]:
        if config is None:
            default or default.append(make_config(jenkins, pagure))
            config = default[0]
        if id(config) not in cores:
            cores[id(config)] = (config, Core(config, dry_run=True))
        return cores[id(config)][1].explain(envelope["topic"], envelope)

    yield explain
    for _, core in cores.values():
        core.close()


@pytest.fixture
def wait_until():
    return harness.wait_until
