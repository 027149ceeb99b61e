"""The local pod runner: an engine Pod's container runs as a real local process, with its
env resolved from a Secret, a named port on loopback and a volume mapped to a directory;
deleting the Pod stops the process."""

from __future__ import annotations

import json
import os
import urllib.request

from .kube import pid_alive, wait_for

SERVER = (
    "import http.server, os\n"
    "os.chdir(os.environ['DATA'])\n"
    "open('greeting', 'w').write(os.environ['GREETING'])\n"
    "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler,"
    " port=int(os.environ.get('STRATUS_PORT_HTTP', '8080')), bind=os.environ.get('STRATUS_LISTEN_HOST', '0.0.0.0'))\n"
)


def test_engine_pod_runs_as_a_local_process(kube, namespace, podrunner):
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "greeting"}, "stringData": {"text": "hello from a secret"}})
    pod = {
        "metadata": {"name": "web-0", "labels": {"stratus.dev/engine": "test-http"}},
        "spec": {
            "containers": [{
                "name": "web", "image": "python:3.11-slim",
                "command": ["python3", "-c", SERVER],
                "env": [{"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "text"}}},
                        {"name": "DATA", "value": "/srv/data"}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "volumeMounts": [{"name": "data", "mountPath": "/srv/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"operator": "Exists"}],
        },
    }
    kube.core.create_namespaced_pod(namespace, pod)

    def annotated():
        p = kube.core.read_namespaced_pod("web-0", namespace)
        ann = p.metadata.annotations or {}
        return ann if "stratus.dev/local-ports" in ann else None

    ann = wait_for(annotated, timeout=60, what="the pod runner to start the process")
    port = json.loads(ann["stratus.dev/local-ports"])["http"]
    pid = int(ann["stratus.dev/local-pid"])
    body = wait_for(lambda: _get(f"http://127.0.0.1:{port}/greeting"), timeout=30, what="the local process to serve")
    assert body == "hello from a secret"

    kube.core.delete_namespaced_pod("web-0", namespace, grace_period_seconds=0)
    wait_for(lambda: not pid_alive(pid), timeout=60, what="the process to stop with its pod")


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None
