"""Shared fixtures: the stand-ins, a config for them, and the real hub.

tests/ is on sys.path (pytest's rootdir conftest), so tests import the helpers
as ``from harness import Hub, wait_until``, ``import messages``,
``from standins import FakeJenkins, FakePagure``.
"""

from __future__ import annotations

import functools

import pytest

import harness
from standins import FakeJenkins, FakePagure

JOBS = {"pungi-pr": "BEEFCAFE", "folder/python-foo": "F00"}


@pytest.fixture
def jenkins():
    with FakeJenkins(JOBS) as server:
        yield server


@pytest.fixture
def pagure():
    with FakePagure() as server:
        yield server


@pytest.fixture
def make_config(tmp_path):
    """make_config(jenkins, pagure, **overrides) -> the poormanci.* config dict,
    with its state_dir under this test's tmp_path (see harness.make_config)."""
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
