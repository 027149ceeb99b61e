"""Dashboard benchmark: one project with N Servers and N Volumes on the local control plane.

Measured, one run:
- the servers page over HTTP as a signed-in member (LIST + render as that user's token):
  the first load and p50/p95 of the next loads, against `kubectl get servers -n P` (the
  same LIST, printed as a table) run the same number of times;
- time to first render in headless Chromium (Debian's, driven by Playwright): the
  navigation's first-contentful-paint and load, cold context each time;
- the delay from a Server's status change (written to the API server) to the row showing
  it in an open page (MutationObserver timestamp in the page minus the time before the
  write; same machine clock), p50/p95;
- the dashboard's resident memory with U signed-in users each holding a live stream.

No operator runs: statuses are written directly (as the operator would), so the figures
are the dashboard's and the API server's only. The member is a ServiceAccount bound to
the shipped `stratus-member` role, with a token from the TokenRequest API, which is what
a Stratus AccessToken is.

    .venv/bin/python benchmarks/dashboard/bench.py --count 1000

Brings up its own cluster (`dashboard-bench`, deleted at the end unless --keep) and
writes results.md next to itself (the closing note under it is written by hand).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
NS = "bench"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    from stratus.dev.cluster import kubectl_path

    res = subprocess.run([kubectl_path(), "--kubeconfig", kubeconfig, *args], input=input, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    return res.stdout


def apply(kubeconfig: str, docs: list[dict]) -> None:
    for i in range(0, len(docs), 250):
        kubectl(kubeconfig, "apply", "--server-side", "-f", "-",
                input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs[i:i + 250]}))


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def seen(page, key: str, timeout: float = 60) -> float:
    """When the page's observer saw `key` (ms since the epoch). Polled from here: the
    page's CSP (rightly) forbids the string evaluation wait_for_function would need."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(f"window.seen[{json.dumps(key)}]")
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"the page never showed {key}")


def sign_in(url: str, token: str):
    import requests

    s = requests.Session()
    page = s.get(url + "/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = s.post(url + "/signin", data={"csrf": csrf, "credential": token}, allow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000, help="Servers (and as many Volumes) in the project")
    ap.add_argument("--loads", type=int, default=20, help="page loads and kubectl runs measured")
    ap.add_argument("--changes", type=int, default=40, help="status changes measured")
    ap.add_argument("--users", type=int, default=20, help="signed-in users with a live stream, for memory")
    ap.add_argument("--cluster", default="dashboard-bench")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    import kubernetes
    from playwright.sync_api import sync_playwright

    from stratus.dev import cluster as devcluster
    from stratus.dev.run import free_port

    started = time.monotonic()
    kc = str(devcluster.up(args.cluster, nodes=3, build=False))
    dash = None
    try:
        kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
        kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f",
                str(REPO / "charts" / "stratus" / "templates" / "roles.yaml"))
        apply(kc, [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "member", "namespace": NS}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "member", "namespace": NS},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stratus-member"},
             "subjects": [{"kind": "ServiceAccount", "name": "member", "namespace": NS}]},
            {"apiVersion": "stratus.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": "m1.small"},
             "spec": {"vcpus": 1, "ram": "2Gi"}},
        ])
        token = kubectl(kc, "create", "token", "member", "-n", NS, "--duration", "2h").strip()
        t0 = time.monotonic()
        apply(kc, [{"apiVersion": "stratus.dev/v1alpha1", "kind": "Server", "metadata": {"name": f"srv-{i:04d}", "namespace": NS},
                    "spec": {"flavor": "m1.small", "containerDisk": "quay.io/containerdisks/fedora:41"}}
                   for i in range(args.count)])
        apply(kc, [{"apiVersion": "stratus.dev/v1alpha1", "kind": "Volume", "metadata": {"name": f"vol-{i:04d}", "namespace": NS},
                    "spec": {"size": "1Gi"}} for i in range(args.count)])
        api = kubernetes.config.new_client_from_config(config_file=kc)
        custom = kubernetes.client.CustomObjectsApi(api)

        def status(i: int, phase: str = "ACTIVE") -> None:
            custom.patch_namespaced_custom_object_status(
                "stratus.dev", "v1alpha1", NS, "servers", f"srv-{i:04d}",
                {"status": {"phase": phase, "node": f"kwok-node-{i % 3}", "flavor": "m1.small", "vcpus": 1, "memory": "2Gi",
                            "addresses": [{"network": "pod", "address": f"10.244.{i // 250}.{i % 250 + 2}"}],
                            "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "message": "running",
                                            "lastTransitionTime": "2026-12-03T00:00:00Z"}]}})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(status, range(args.count)))
        print(f"{args.count} Servers and Volumes with status in {time.monotonic() - t0:.0f}s", flush=True)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(pathlib.Path(tempfile.mkdtemp()) / "dashboard.log", "wb")
        dash = subprocess.Popen([sys.executable, "-m", "stratus", "dashboard", "--port", str(port)],
                                env={**os.environ, "KUBECONFIG": kc}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        import requests
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/healthz", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        rss_idle = rss_kib(dash.pid)
        s = sign_in(url, token)

        def timed_get(path: str) -> tuple[float, int]:
            t = time.perf_counter()
            r = s.get(url + path)
            assert r.status_code == 200, r.text[:300]
            return time.perf_counter() - t, len(r.content)

        first_servers, size_servers = timed_get(f"/p/{NS}/servers")
        servers_loads = [timed_get(f"/p/{NS}/servers")[0] for _ in range(args.loads)]
        first_volumes, _ = timed_get(f"/p/{NS}/volumes")
        volumes_loads = [timed_get(f"/p/{NS}/volumes")[0] for _ in range(args.loads)]
        token_kc = HERE / "member.kubeconfig"
        admin = yaml.safe_load(pathlib.Path(kc).read_text())
        token_kc.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "m", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "m", "namespace": NS}}], "current-context": "c"}))
        token_kc.chmod(0o600)
        kubectl_runs = []
        for _ in range(args.loads):
            t = time.perf_counter()
            out = kubectl(str(token_kc), "get", "servers", "-n", NS)
            kubectl_runs.append(time.perf_counter() - t)
        assert out.count("\n") == args.count + 1
        token_kc.unlink()
        print(f"servers page: first {first_servers:.2f}s, p50 {percentile(servers_loads, .5):.2f}s, "
              f"{size_servers // 1024} KiB; kubectl p50 {percentile(kubectl_runs, .5):.2f}s", flush=True)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            cookie = {"name": "stratus_session", "value": s.cookies["stratus_session"], "url": url}
            renders = []
            for _ in range(3):
                ctx = browser.new_context()
                ctx.add_cookies([cookie])
                page = ctx.new_page()
                page.set_default_timeout(180_000)
                t = time.perf_counter()
                page.goto(f"{url}/p/{NS}/servers", wait_until="load")
                wall = time.perf_counter() - t
                fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
                nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
                nav = json.loads(nav)
                renders.append({"fcp": (fcp or 0) / 1000, "load": nav["loadEventEnd"] / 1000, "wall": wall,
                                "ttfb": nav["responseStart"] / 1000})
                ctx.close()
            print("renders:", renders, flush=True)
            ctx = browser.new_context()
            ctx.add_cookies([cookie])
            page = ctx.new_page()
            page.set_default_timeout(180_000)
            page.goto(f"{url}/p/{NS}/servers")
            page.wait_for_selector('#servers tbody[data-live-state="on"]', timeout=30_000)
            page.evaluate("""() => {
                window.seen = {};
                new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes)
                    if (n.dataset && n.dataset.name) window.seen[n.dataset.name + ':' + n.querySelector('.badge').textContent] = Date.now(); })
                  .observe(document.querySelector('#servers tbody'), {childList: true});
            }""")
            delays = []
            for k in range(args.changes):
                i = (k * 37) % args.count
                phase = "SHUTOFF" if k % 2 == 0 else "PAUSED"
                before = time.time() * 1000
                status(i, phase)
                key = f"srv-{i:04d}:{phase}"
                delays.append((seen(page, key) - before) / 1000)
                status(i, "ACTIVE")
                seen(page, f"srv-{i:04d}:ACTIVE")
                page.evaluate(f"delete window.seen[{json.dumps(f'srv-{i:04d}:ACTIVE')}]")
            ctx.close()
            browser.close()

        # Memory: U signed-in users, each with a live stream open.
        rss_before_users = rss_kib(dash.pid)
        streams, stop = [], threading.Event()

        def hold(sess):
            with sess.get(f"{url}/p/{NS}/servers/events?rv=" + str(sess.rv), stream=True, timeout=120) as r:
                for _ in r.iter_lines():
                    if stop.is_set():
                        return

        users = []
        for _ in range(args.users):
            us = sign_in(url, token)
            page_html = us.get(f"{url}/p/{NS}/servers").text
            us.rv = re.search(r'events\?rv=(\d+)', page_html).group(1)
            users.append(us)
        for us in users:
            th = threading.Thread(target=hold, args=(us,), daemon=True)
            th.start()
            streams.append(th)
        time.sleep(5)
        status(0, "SHUTOFF")  # one change fanned out to every stream
        time.sleep(5)
        rss_users = rss_kib(dash.pid)
        stop.set()
        status(0, "ACTIVE")

        ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
        lines = [
            "# Dashboard benchmark",
            "",
            f"One run, {time.strftime('%Y-%m-%d')}, local control plane (kwok), 2 shared cores. "
            f"Project with {args.count} Servers (status ACTIVE, node, address) and {args.count} Volumes; "
            f"the member signs in with a bound ServiceAccount token (what an AccessToken is).",
            "",
            "| what | first | p50 | p95 |",
            "|---|---|---|---|",
            f"| servers page over HTTP (LIST as the user + render, {size_servers // 1024} KiB) | {ms(first_servers)} | "
            f"{ms(percentile(servers_loads, .5))} | {ms(percentile(servers_loads, .95))} |",
            f"| volumes page over HTTP | {ms(first_volumes)} | {ms(percentile(volumes_loads, .5))} | "
            f"{ms(percentile(volumes_loads, .95))} |",
            f"| baseline: `kubectl get servers -n {NS}` (same token; includes kubectl's start) | {ms(kubectl_runs[0])} | "
            f"{ms(percentile(kubectl_runs, .5))} | {ms(percentile(kubectl_runs, .95))} |",
            f"| Chromium: first-contentful-paint of the servers page (3 cold contexts) | {ms(renders[0]['fcp'])} | "
            f"{ms(percentile([r['fcp'] for r in renders], .5))} | {ms(percentile([r['fcp'] for r in renders], .95))} |",
            f"| Chromium: load event | {ms(renders[0]['load'])} | {ms(percentile([r['load'] for r in renders], .5))} | "
            f"{ms(percentile([r['load'] for r in renders], .95))} |",
            f"| status change written → row updated in the open page ({args.changes} changes) | | "
            f"{ms(percentile(delays, .5))} | {ms(percentile(delays, .95))} |",
            "",
            f"Dashboard resident memory: {rss_idle // 1024} MiB idle, {rss_before_users // 1024} MiB after the page loads, "
            f"{rss_users // 1024} MiB with {args.users} signed-in users each holding a live stream "
            f"({(rss_users - rss_before_users) / max(1, args.users):.0f} KiB per user).",
            "",
            f"Whole run: {time.monotonic() - started:.0f}s.",
        ]
        (HERE / "results.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        if dash is not None:
            dash.terminate()
            dash.wait(20)
        if not args.keep:
            devcluster.down(args.cluster)


if __name__ == "__main__":
    main()
