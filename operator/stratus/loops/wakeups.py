"""Sleeping daemons that a watch event can wake at once.

A daemon sleeps until its next pass is due or until an event handler wakes it (a spec
change, an approval, a boot callback); its own status writes do not wake it.
"""

from __future__ import annotations

import asyncio
import logging
import typing as t

from kubernetes.client.rest import ApiException

#: Seconds before a pass that failed on an API error is tried again.
API_RETRY = 5.0


class Wakeups:
    """One asyncio.Event per key (a kind and a name, or a name)."""

    def __init__(self) -> None:
        self._events: dict[t.Hashable, asyncio.Event] = {}

    def event(self, key: t.Hashable) -> asyncio.Event:
        if key not in self._events:
            self._events[key] = asyncio.Event()
        return self._events[key]

    def wake(self, key: t.Hashable) -> None:
        """Wake the key's daemon, or have its next sleep end at once."""
        self.event(key).set()

    def wake_if_sleeping(self, key: t.Hashable) -> None:
        """Wake the key's daemon if one runs (no event is made for a key nobody waits on)."""
        if key in self._events:
            self._events[key].set()

    def forget(self, key: t.Hashable) -> None:
        self._events.pop(key, None)

    def __contains__(self, key: t.Hashable) -> bool:
        return key in self._events


async def sleep(event: asyncio.Event, delay: float | None) -> None:
    """Sleep ``delay`` seconds (None: until woken), or until the event is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=delay)
    except TimeoutError:
        pass


async def repeat(wakeups: Wakeups, key: t.Hashable, step: t.Callable[[], float | None], stopped,
                 logger: logging.Logger | logging.LoggerAdapter, what: str) -> None:
    """A daemon's life: run ``step`` in a thread, sleep the seconds it returns or until
    woken, again; an API error is logged and retried after ``API_RETRY`` seconds; a step
    that returns None ends the loop (and forgets the key)."""
    event = wakeups.event(key)
    while not stopped:
        event.clear()
        try:
            delay = await asyncio.to_thread(step)
        except ApiException as exc:
            logger.warning("%s: API error %s %s; retrying", what, exc.status, exc.reason)
            delay = API_RETRY
        if delay is None:
            wakeups.forget(key)
            return
        await sleep(event, delay)
