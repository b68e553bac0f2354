"""Benchmark probe, loaded by the hub's Python only when bench/run.py puts
bench/probe on PYTHONPATH. Never shipped, never imported by the product.

It times the real ``consume()`` of one consumer class from the outside:
``POORMANCI_BENCH_PROBE=module:Class`` names it; when that module is
imported, its class's ``consume`` is wrapped to record, per call, the time it
was entered (time.time()), how long it took (perf_counter_ns) and the
message's msg_id. On SIGUSR1, or when the file ``<OUT>.request`` appears
(a signal may reach a thread other than the reactor's, and its Python
handler then waits for the main thread), every record so far is written as
JSON to ``POORMANCI_BENCH_PROBE_OUT`` (atomically, via a rename).
"""

import importlib.abc
import json
import os
import signal
import sys
import threading
import time

_TARGET = os.environ.get("POORMANCI_BENCH_PROBE", "")
_OUT = os.environ.get("POORMANCI_BENCH_PROBE_OUT", "")
_records = []  # (entered, duration_ns, msg_id); list.append is atomic under the GIL
_lock = threading.Lock()


def _wrap(cls):
    inner = cls.consume

    def consume(self, message):
        entered = time.time()
        start = time.perf_counter_ns()
        try:
            return inner(self, message)
        finally:
            took = time.perf_counter_ns() - start
            body = message.get("body") if isinstance(message, dict) else None
            msg_id = body.get("msg_id") if isinstance(body, dict) else None
            _records.append((entered, took, msg_id))

    consume.__wrapped__ = inner
    cls.consume = consume


_wake = threading.Event()


def _dump():
    with _lock:
        records = list(_records)
        tmp = _OUT + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "records": records}, f)
        os.replace(tmp, _OUT)


def _dumper():
    request = _OUT + ".request"
    while True:
        _wake.wait(0.05)
        if _wake.is_set() or os.path.exists(request):
            _wake.clear()
            _dump()
            try:
                os.unlink(request)
            except FileNotFoundError:
                pass


class _Finder(importlib.abc.MetaPathFinder):
    """Patches the class right after its module has run."""

    def __init__(self, module, cls):
        self.module, self.cls = module, cls

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, cls_name = spec.loader, self.cls
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _wrap(getattr(module, cls_name))
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]

        loader.exec_module = exec_module
        return spec


if _TARGET and _OUT:
    _module, _, _cls = _TARGET.partition(":")
    sys.meta_path.insert(0, _Finder(_module, _cls))
    signal.signal(signal.SIGUSR1, lambda signum, frame: _wake.set())
    threading.Thread(target=_dumper, name="bench-probe", daemon=True).start()

# Keep any other sitecustomize working (this one shadows it on sys.path).
_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    if _entry and os.path.abspath(_entry) != _here and os.path.isfile(os.path.join(_entry, "sitecustomize.py")):
        with open(os.path.join(_entry, "sitecustomize.py")) as _f:
            exec(compile(_f.read(), os.path.join(_entry, "sitecustomize.py"), "exec"), {"__name__": "sitecustomize"})
        break
