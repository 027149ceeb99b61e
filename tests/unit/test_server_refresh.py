"""The Server status refresh coalesces a burst of child events (pure concurrency logic;
the refresh itself runs against the real API server in the integration tests)."""

from __future__ import annotations

import threading

from stratus.controllers import server


def test_events_that_find_a_refresh_waiting_are_absorbed_by_it(monkeypatch):
    running = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def fake_refresh(namespace, name):
        calls.append(name)
        if len(calls) == 1:
            running.set()
            release.wait(10)
        return {"phase": True}

    monkeypatch.setattr(server, "_refresh_status", fake_refresh)
    results: dict[str, dict] = {}

    def event(tag):
        results[tag] = server.refresh_status("ns", "web")

    first = threading.Thread(target=event, args=("first",))
    first.start()
    assert running.wait(10)
    second = threading.Thread(target=event, args=("second",))  # waits for the lock
    second.start()
    for _ in range(200):
        with server._waiting_lock:
            if ("ns", "web") in server._waiting:
                break
        threading.Event().wait(0.01)
    # Later events of the burst return at once: the waiting refresh will read their change.
    event("third")
    event("fourth")
    assert results["third"] == {} and results["fourth"] == {}
    release.set()
    first.join(10)
    second.join(10)
    assert calls == ["web", "web"]
    assert results["first"] == results["second"] == {"phase": True}
    # Once nothing waits, the next event refreshes again.
    event("later")
    assert calls == ["web", "web", "web"]
