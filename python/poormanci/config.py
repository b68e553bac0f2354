"""The part of a hub's config that is poormanci's."""

from __future__ import annotations

from typing import Any, Mapping

PREFIX = "poormanci."


def poormanci_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``poormanci.*`` keys of a fedmsg config (or of fedora-messaging's
    ``[consumer_config]``): the core reads nothing else, and other keys may
    hold values it could not read (a timedelta, a compiled regex, a class)."""
    return {key: value for key, value in config.items() if isinstance(key, str) and key.startswith(PREFIX)}
