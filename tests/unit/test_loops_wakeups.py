"""The daemon loop shared by the consolidation loops (stratus.loops.wakeups): a pass,
then sleep or wake; an API error retries; None ends it and forgets the key."""

from __future__ import annotations

import asyncio
import logging

import pytest
from kubernetes.client.rest import ApiException

from stratus.loops import wakeups as w


class Stopped:
    def __init__(self) -> None:
        self.value = False

    def __bool__(self) -> bool:
        return self.value


def run(steps, monkeypatch, stopped=None, wake_after=None):
    """Run ``repeat`` over a script of step results (a number, None, or an exception)."""
    monkeypatch.setattr(w, "API_RETRY", 0.01)
    seen: list = []
    wakeups = w.Wakeups()
    script = list(steps)

    def step():
        seen.append(len(seen))
        item = script.pop(0) if script else None
        if isinstance(item, Exception):
            raise item
        return item

    async def main():
        task = asyncio.create_task(w.repeat(wakeups, "k", step, stopped or Stopped(), logging.getLogger("t"), "test"))
        if wake_after is not None:
            await asyncio.sleep(wake_after)
            wakeups.wake_if_sleeping("k")
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    return seen, wakeups


@pytest.mark.parametrize(
    "steps, passes",
    [([None], 1), ([0.01, 0.01, None], 3), ([ApiException(status=500), None], 2), ([ApiException(status=409), 0.0, None], 3)],
    ids=["done-at-once", "until-done", "api-error-retries", "api-error-then-immediate"],
)
def test_passes_until_a_step_says_done(steps, passes, monkeypatch):
    seen, wakeups = run(steps, monkeypatch)
    assert len(seen) == passes
    assert "k" not in wakeups  # forgotten once done


def test_a_wake_ends_the_sleep_early(monkeypatch):
    seen, _ = run([60.0, None], monkeypatch, wake_after=0.05)  # would sleep a minute unless woken
    assert len(seen) == 2


def test_a_stopped_daemon_runs_no_pass(monkeypatch):
    stopped = Stopped()
    stopped.value = True
    seen, _ = run([None], monkeypatch, stopped=stopped)
    assert seen == []


def test_wake_if_sleeping_makes_no_event_for_nobody():
    wakeups = w.Wakeups()
    wakeups.wake_if_sleeping("nobody")
    assert "nobody" not in wakeups
    wakeups.wake("somebody")
    assert wakeups.event("somebody").is_set()
