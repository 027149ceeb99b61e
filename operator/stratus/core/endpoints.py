"""Where an engine Pod is reached: its loopback port on the local control plane, its Pod IP
and container port on a real cluster. Pure: reads the Pod object only.

The local pod runner (stratus.dev.podrunner) runs an engine Pod's container as a local
process and annotates the Pod with ``stratus.dev/local-ports`` (port name -> loopback port).
"""

from __future__ import annotations

import json

PORTS_ANNOTATION = "stratus.dev/local-ports"


def pod_endpoint(pod: dict, port_name: str) -> tuple[str, int] | None:
    """(host, port) of the Pod's named container port, or None while it has no address yet."""
    local = ((pod.get("metadata") or {}).get("annotations") or {}).get(PORTS_ANNOTATION)
    if local:
        try:
            ports = json.loads(local)
        except ValueError:
            ports = {}
        if port_name in ports:
            return "127.0.0.1", int(ports[port_name])
        return None
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == port_name:
                return ip, int(port["containerPort"])
    return None
