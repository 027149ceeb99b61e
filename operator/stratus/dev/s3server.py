"""Run a real S3-compatible object server (versitygw) as a local subprocess.

Used by the integration-test fixtures and by the ``make run`` development environment;
production clusters point the operator at an object store of their own instead.

Design decisions
================

Which server.
    versitygw (the Versity S3 Gateway, Apache-2.0) with its ``posix`` backend. It is built
    from the Go module proxy by ``hack/build-tools.sh s3`` in about a minute, idles at
    about 30 MB of memory, supports bucket versioning (older versions live in a
    separate directory), bucket policies, bucket tags, and has an admin API for
    accounts, which :mod:`stratus.drivers.s3` uses to mint per-bucket credentials.
    It has no per-bucket quotas and no lifecycle rules: the operator enforces those
    (see :mod:`stratus.drivers.s3`). MinIO is AGPL-licensed and SeaweedFS is a much
    larger build with several processes to run, so neither was chosen.

Where the binary comes from.
    ``$STRATUS_VERSITYGW`` if set, else ``$STRATUS_CACHE/tools/bin/versitygw`` (the
    cache defaults to ``~/.cache/stratus``), else ``versitygw`` on ``PATH``. A missing
    binary raises :class:`S3ServerError` naming the build command.

Data directory.
    One directory holds everything, created with mode 0700 because versitygw's internal
    IAM keeps account secrets in plain JSON there::

        DATA/objects/    buckets and objects (one directory per bucket)
        DATA/versions/   older object versions (versioning needs this directory)
        DATA/iam/        accounts created through the admin API
        DATA/root-credentials.json   the root access key pair, mode 0600
        DATA/server.log  the server's own output (no access log, no secrets)

    The root credentials are generated on first start and reused on later starts of the
    same directory, so a developer's ``make run`` keeps working across restarts. Pass
    explicit credentials to override.

Credentials never leave through argv or logs.
    The root key pair reaches the server through its environment (``ROOT_ACCESS_KEY`` /
    ``ROOT_SECRET_KEY``), not its command line, which any local user could read with
    ``ps``. :class:`S3Endpoint` hides both keys from ``repr``, and this module logs only
    the URL and the data directory.

Port and readiness.
    The server listens on 127.0.0.1 only, on a port picked free by the kernel (or the
    one given). There is a small window between picking a port and the server binding
    it; if the server exits during start-up because the port was taken, start() retries
    with a new port. Readiness is a GET on a health path that cannot collide with a
    bucket name (bucket names have no underscores), followed by an authenticated
    ListBuckets, so ``start()`` returns only when the root credentials work.

One admin listener.
    The admin API shares the S3 port (versitygw serves it there when no separate admin
    port is given); it answers only to the root or admin-role accounts.

Stopping.
    SIGTERM, then SIGKILL after a grace period. With ``die_with_parent`` (Linux only)
    the child also gets ``PR_SET_PDEATHSIG``, so a crashed test run does not leave a
    server behind. Linux ties that signal to the *thread* that started the child, so
    only ask for it from a thread that lives as long as the server (the test session's
    main thread, say), never from a worker pool.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

#: Bucket names cannot contain "_", so this path never shadows a bucket.
HEALTH_PATH = "/_stratus_health"
DEFAULT_REGION = "us-east-1"
BINARY_NAME = "versitygw"
BUILD_HINT = "hack/build-tools.sh s3"


class S3ServerError(RuntimeError):
    """The object server could not be found, started or reached."""


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    """Where a running object server answers, and its root (admin) key pair."""

    url: str
    region: str
    access_key: str = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)


def find_binary() -> Path:
    """Locate the versitygw binary built by ``hack/build-tools.sh s3``."""
    explicit = os.environ.get("STRATUS_VERSITYGW")
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise S3ServerError(f"STRATUS_VERSITYGW={explicit} is not an executable file")
    cache = Path(os.environ.get("STRATUS_CACHE") or Path.home() / ".cache" / "stratus")
    candidate = cache / "tools" / "bin" / BINARY_NAME
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path)
    raise S3ServerError(
        f"{BINARY_NAME} not found (looked at STRATUS_VERSITYGW, {candidate} and PATH); "
        f"build it with `{BUILD_HINT}`"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the server when the process that started it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class S3Server:
    """A versitygw subprocess bound to 127.0.0.1 with its data in ``data_dir``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with S3Server(tmp_path) as endpoint:
            client = boto3.client("s3", endpoint_url=endpoint.url, ...)
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        region: str = DEFAULT_REGION,
        access_key: str | None = None,
        secret_key: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        self.data_dir = Path(data_dir)
        self.binary = Path(binary) if binary else None
        self.host = host
        self.port = port
        self.region = region
        self._keys = (access_key, secret_key) if access_key else None
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self.endpoint: S3Endpoint | None = None

    # -- layout -------------------------------------------------------------------

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def versions_dir(self) -> Path:
        return self.data_dir / "versions"

    @property
    def iam_dir(self) -> Path:
        return self.data_dir / "iam"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "root-credentials.json"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        for d in (self.objects_dir, self.versions_dir, self.iam_dir):
            d.mkdir(exist_ok=True)

    def _root_keys(self) -> tuple[str, str]:
        if self._keys:
            return self._keys  # type: ignore[return-value]
        if self.credentials_file.exists():
            saved = json.loads(self.credentials_file.read_text())
            return saved["accessKey"], saved["secretKey"]
        keys = ("stratus-root-" + secrets.token_hex(6), secrets.token_urlsafe(30))
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"accessKey": keys[0], "secretKey": keys[1]}, f)
        return keys

    # -- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> S3Endpoint:
        """Start the server and wait until the root credentials work; idempotent."""
        if self.running and self.endpoint:
            return self.endpoint
        binary = self.binary or find_binary()
        self._prepare_dirs()
        access_key, secret_key = self._root_keys()
        attempts = 1 if self.port else 3
        last_error: Exception | None = None
        for _ in range(attempts):
            port = self.port or free_port(self.host)
            try:
                return self._start_once(binary, port, access_key, secret_key, timeout)
            except S3ServerError as exc:
                last_error = exc
                self.stop()
                if "address already in use" not in str(exc):
                    break
        raise last_error  # type: ignore[misc]

    def _start_once(
        self, binary: Path, port: int, access_key: str, secret_key: str, timeout: float
    ) -> S3Endpoint:
        argv = [
            str(binary),
            "--port", f"{self.host}:{port}",
            "--region", self.region,
            "--iam-dir", str(self.iam_dir),
            "--health", HEALTH_PATH,
            "--quiet",
            "posix",
            "--versioning-dir", str(self.versions_dir),
            str(self.objects_dir),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "ROOT_"))}
        env["ROOT_ACCESS_KEY"] = access_key
        env["ROOT_SECRET_KEY"] = secret_key
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        url = f"http://{self.host}:{port}"
        endpoint = S3Endpoint(url, self.region, access_key, secret_key)
        self._wait_ready(endpoint, timeout)
        self.endpoint = endpoint
        log.info("object server ready at %s (data in %s)", url, self.data_dir)
        return endpoint

    def _wait_ready(self, endpoint: S3Endpoint, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise S3ServerError(
                    f"object server exited with code {code} during start-up: {self._log_tail()}"
                )
            if self._healthy(endpoint.url) and self._root_works(endpoint):
                return
            if time.monotonic() > deadline:
                raise S3ServerError(
                    f"object server did not answer within {timeout:.0f}s: {self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _root_works(endpoint: S3Endpoint) -> bool:
        import boto3  # local import: the launcher itself needs only the standard library
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=endpoint.url,
            region_name=endpoint.region,
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )
        try:
            client.list_buckets()
            return True
        except (BotoCoreError, ClientError):
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.endpoint = None

    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground: ``python -m stratus.dev.s3server DATA_DIR``.

    Prints the endpoint URL and the path of the root credentials file, never the keys.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--region", default=DEFAULT_REGION)
    args = parser.parse_args(argv)
    server = S3Server(args.data_dir, port=args.port, region=args.region, die_with_parent=True)
    endpoint = server.start()
    print(f"endpoint: {endpoint.url}", flush=True)
    print(f"region: {endpoint.region}", flush=True)
    print(f"root credentials: {server.credentials_file}", flush=True)
    stop = False

    def _on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        while not stop and server.running:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
