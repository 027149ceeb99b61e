"""An in-memory ``core.consolidation.executor.HostActions``: records every call, changes
nothing, and answers the target-Pod question from a table."""

from __future__ import annotations


class RecordingHosts:
    def __init__(self, pod_messages: dict[tuple[str, str], str] | None = None) -> None:
        self.calls: list[tuple] = []
        self.pod_messages = pod_messages or {}

    def cordon(self, node: str, plan: str) -> None:
        self.calls.append(("cordon", node, plan))

    def uncordon(self, node: str) -> None:
        self.calls.append(("uncordon", node))

    def set_online(self, bmn: str, online: bool) -> None:
        self.calls.append(("set_online", bmn, online))

    def create_migration(self, mig: dict) -> None:
        self.calls.append(("create_migration", mig["metadata"]["namespace"], mig["metadata"]["name"],
                           mig["spec"]["addedNodeSelector"]["kubernetes.io/hostname"]))

    def delete_migration(self, name: str, namespace: str) -> None:
        self.calls.append(("delete_migration", namespace, name))

    def target_pod_message(self, namespace: str, migration: str) -> str:
        return self.pod_messages.get((namespace, migration), "")
