"""The fedora-messaging (AMQP) front end:

    fedora-messaging --conf poormanci.toml consume --callback=poormanci.amqp:Consumer

fedora-messaging makes one ``Consumer()`` at start and calls it with each
``fedora_messaging.message.Message``. The config is the TOML's
``[consumer_config]``, with the same keys as the fedmsg dict
(``"poormanci.pagure"``, ...); see fedora-messaging/poormanci.toml.example.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any, Mapping

from fedora_messaging import config as fm_config
from fedora_messaging.exceptions import HaltConsumer, Nack

from poormanci._core import ConfigError, Core
from poormanci.cli import unbound_topics
from poormanci.config import poormanci_keys

log = logging.getLogger("poormanci")

# sysexits' EX_CONFIG: a systemd unit can tell "fix the config" (do not restart,
# RestartPreventExitStatus=78) from a breakdown (exit 1: restart).
EX_CONFIG = 78


class Consumer:
    """A fedora-messaging callback handing each message to the core.

    An exception escaping ``__call__`` stops the whole consumer process, so
    none does: a message the core cannot use is logged and acknowledged (a
    redelivery would fail the same way). Only two cases give the message back
    to the broker: this consumer is closing (``Nack``: another consumer, or
    this one after its restart, takes it) and the core has broken down
    (``HaltConsumer``, requeued: the process exits non-zero for systemd to
    restart it, rather than spin returning every message).
    """

    def __init__(self, consumer_config: Mapping[str, Any] | None = None):
        if consumer_config is None:
            consumer_config = fm_config.conf["consumer_config"]
        if log.level == logging.NOTSET:
            # fedora-messaging's default log_config shows WARNING and up only.
            log.setLevel(logging.INFO)
        self._lock = threading.Lock()
        try:
            self.core: Core | None = Core(poormanci_keys(consumer_config))
        except ConfigError as e:
            for problem in e.problems:
                log.error("poormanci config ([consumer_config] in the TOML): %s", problem)
            # Not an exception: fedora-messaging would print a traceback or a
            # "Usage:" error; these lines say all there is to say.
            log.error("poormanci is not started: %d problem(s) in the config", len(e.problems))
            raise SystemExit(EX_CONFIG) from None
        except RuntimeError as e:  # state_dir locked by another poormanci, or unusable
            log.error("poormanci is not started: %s", e)
            raise SystemExit(EX_CONFIG) from None
        atexit.register(self.close)
        for topic in unbound_topics(fm_config.conf, self.core.topics()):
            log.warning("no binding routes %s# to the queue: poormanci will not see those messages", topic)

    def __call__(self, message) -> None:
        core = self.core
        if core is None:
            raise Nack()
        topic = message.topic
        envelope = {"topic": topic, "msg": message.body, "msg_id": message.id}
        try:
            # Returns once the state store has recorded it: only then is the
            # message acknowledged, so a crash loses nothing the broker gave.
            core.handle_recorded(topic, envelope)
        except RuntimeError as e:
            # The engine is gone: nothing more can be handled in this process.
            log.error("msg %s %s: returned to the queue, stopping: %s", message.id, topic, e)
            raise HaltConsumer(exit_code=1, reason=f"poormanci stopped: {e}", requeue=True) from e
        except Exception:
            log.exception("msg %s %s: dropped: internal error", message.id, topic)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the core; what is not done stays in the state store. Idempotent."""
        with self._lock:
            core, self.core = self.core, None
        if core is not None:
            core.close(timeout)
            log.info("poormanci stopped; work not done stays in the state store for the next start")
