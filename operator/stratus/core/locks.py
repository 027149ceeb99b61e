"""Locks per key (a Server, an Image, a namespace) that live only while they are used.

A ``defaultdict(threading.Lock)`` keyed by object grows by one lock for every object the
operator ever saw and never shrinks. ``KeyedLocks`` keeps a lock only while some thread
holds it or waits for it: the last one out removes it, so its size is bounded by the
number of threads, not by the history of objects.

    _locks = KeyedLocks(threading.RLock)
    with _locks[(namespace, name)]:
        ...
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self, lock) -> None:
        self.lock, self.users = lock, 0


class _Held:
    """The context manager ``KeyedLocks[key]`` returns."""

    __slots__ = ("_owner", "_key", "_entry")

    def __init__(self, owner: KeyedLocks, key: Hashable) -> None:
        self._owner, self._key, self._entry = owner, key, None

    def __enter__(self) -> _Held:
        self._entry = self._owner._join(self._key)
        try:
            self._entry.lock.acquire()
        except BaseException:
            self._owner._leave(self._key, self._entry)
            raise
        return self

    def __exit__(self, *exc) -> None:
        entry, self._entry = self._entry, None
        try:
            entry.lock.release()
        finally:
            self._owner._leave(self._key, entry)


class KeyedLocks:
    """One lock per key, made on first use and dropped when nobody holds or awaits it.
    With ``threading.RLock`` as the factory a thread may take its key again."""

    def __init__(self, factory: Callable[[], object] = threading.Lock) -> None:
        self._factory = factory
        self._entries: dict[Hashable, _Entry] = {}
        self._guard = threading.Lock()

    def __getitem__(self, key: Hashable) -> _Held:
        return _Held(self, key)

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)

    def _join(self, key: Hashable) -> _Entry:
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(self._factory())
            entry.users += 1
            return entry

    def _leave(self, key: Hashable, entry: _Entry) -> None:
        with self._guard:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
