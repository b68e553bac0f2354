"""The moksha consumer fedmsg-hub runs: it hands each message to the core."""

import logging

import fedmsg.consumers

from poormanci._core import ConfigError, Core

log = logging.getLogger("poormanci")


def _show_logs_like_fedmsg():
    # fedmsg's stock logging config only has handlers for the fedmsg and
    # moksha loggers; without this our lines would never reach the journal.
    if log.handlers or logging.getLogger().handlers:
        return
    fedmsg_log = logging.getLogger("fedmsg")
    for handler in fedmsg_log.handlers:
        log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    log.propagate = False


class Integrator(fedmsg.consumers.FedmsgConsumer):
    config_key = "poormanci.enabled"
    topic = []

    def __init__(self, hub):
        self.core = None
        if hub.config.get(self.config_key):
            _show_logs_like_fedmsg()
            try:
                self.core = Core(hub.config)
            except (ConfigError, RuntimeError) as e:
                # One clear line; returning before FedmsgConsumer.__init__
                # leaves the consumer unregistered, the hub running.
                log.error("poormanci is not started: %s", e)
                return
            self.topic = self.core.topics()
        super().__init__(hub)

    def consume(self, message):
        self.core.handle(message.get("topic"), message.get("body"))

    def stop(self):
        if self.core is not None:
            self.core.close(5.0)
        super().stop()
