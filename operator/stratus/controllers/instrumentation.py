"""Handler instrumentation: every kopf resource handler reports its runs, errors and
latency to the exporter's health metrics (``stratus_handler_*``)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from typing import Any

import kopf


def instrument(registry: Any, health: Any) -> int:
    """Wrap every resource handler so it reports runs, errors and latency; returns how many.

    Uses kopf's registry internals; if they change, only these metrics are lost.
    """
    count = 0
    for sub in (getattr(registry, "_changing", None), getattr(registry, "_watching", None)):
        handlers = getattr(sub, "_handlers", None)
        if handlers is None:
            continue
        for i, h in enumerate(handlers):
            sel = h.selector
            resource = (getattr(sel, "plural", None) or getattr(sel, "any_name", None) or getattr(sel, "kind", None)
                        or str(sel))
            handlers[i] = dataclasses.replace(h, fn=_timed(h.fn, health, str(resource), str(h.id)))
            count += 1
    return count


def _timed(fn, health, resource: str, handler: str):
    if getattr(fn, "_stratus_timed", False):
        return fn

    def outcome(exc: BaseException | None) -> str:
        if exc is None:
            return "success"
        return "retry" if isinstance(exc, kopf.TemporaryError) else "error"

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            health.in_flight.labels(resource).inc()
            exc = None
            try:
                return await fn(*args, **kwargs)
            except BaseException as e:
                exc = e
                raise
            finally:
                health.in_flight.labels(resource).dec()
                health.observe_handler(resource, handler, outcome(exc), time.perf_counter() - t0)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            health.in_flight.labels(resource).inc()
            exc = None
            try:
                return fn(*args, **kwargs)
            except BaseException as e:
                exc = e
                raise
            finally:
                health.in_flight.labels(resource).dec()
                health.observe_handler(resource, handler, outcome(exc), time.perf_counter() - t0)
    wrapper._stratus_timed = True
    return wrapper
