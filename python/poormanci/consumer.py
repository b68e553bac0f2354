"""The moksha consumer fedmsg-hub runs: it hands each message to the core."""

import logging
import signal
import threading

import fedmsg.consumers

from poormanci._core import ConfigError, Core
from poormanci.config import poormanci_keys

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


def _stop_cleanly_on_sigterm(hub):
    """fedmsg-hub stops cleanly on SIGINT and SIGHUP only; SIGTERM (what
    systemd sends) would end the process at once, requests in flight and
    all. Stop on it the way SIGINT does: close the hub (each consumer's
    stop(); ours lets requests in flight finish), then the reactor, woken
    through its waker since the signal handler may run while it waits."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # someone else handles it

    def on_sigterm(signum, frame):
        from moksha.hub.reactor import reactor

        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        log.info("SIGTERM: stopping; requests in flight get up to 5 s")
        try:
            hub.close()
        finally:
            reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, on_sigterm)


class Integrator(fedmsg.consumers.FedmsgConsumer):
    config_key = "poormanci.enabled"
    topic = []

    def __init__(self, hub):
        self.core = None
        if hub.config.get(self.config_key):
            _show_logs_like_fedmsg()
            try:
                self.core = Core(poormanci_keys(hub.config))
            except (ConfigError, RuntimeError) as e:
                # One clear line; returning before FedmsgConsumer.__init__
                # leaves the consumer unregistered, the hub running.
                log.error("poormanci is not started: %s", e)
                return
            self.topic = self.core.topics()
            _stop_cleanly_on_sigterm(hub)
        super().__init__(hub)

    def consume(self, message):
        self.core.handle(message.get("topic"), message.get("body"))

    def stop(self):
        if self.core is not None:
            self.core.close(5.0)
        super().stop()
