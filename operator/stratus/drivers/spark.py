"""The Spark standalone master, as the operator sees it: its JSON status at the web UI.

``GET <web UI>/json/`` answers with the master's state, its workers (id, host, port, state,
cores, memory) and its active and completed applications (id, name, state). The operator
reads registered workers and finds a DataJob's application by its deterministic name there.
Jobs are submitted by their driver Pods (``stratus spark driver``), not from here, so an
operator restart never submits twice.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

TIMEOUT = 3.0


def master_json(web_ui: str, timeout: float = TIMEOUT) -> dict | None:
    """The master's status, or None when it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"{web_ui.rstrip('/')}/json/", timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def kill_application(web_ui: str, app_id: str, timeout: float = TIMEOUT) -> bool:
    """Ask the master to kill an application (its UI's kill action); True when it accepted."""
    data = f"id={app_id}&terminate=true".encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{web_ui.rstrip('/')}/app/kill/", data=data, method="POST"), timeout=timeout) as r:
            return r.status < 400
    except (OSError, urllib.error.URLError):
        return False
