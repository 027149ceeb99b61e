"""Inside a Spark Pod: start Spark's daemons and drive applications (``stratus spark ...``).

This runs in the engine's Pod (or, on the local control plane, in the process the pod runner
starts for it), never in the operator. See stratus.cli.spark.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile

from ..core import dataprocessing as dp

S3A_JARS_ENV = "STRATUS_SPARK_EXTRA_JARS"


def spark_home() -> pathlib.Path:
    if os.environ.get("SPARK_HOME") and pathlib.Path(os.environ["SPARK_HOME"], "bin", "spark-class").exists():
        return pathlib.Path(os.environ["SPARK_HOME"])
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SystemExit("stratus spark: neither $SPARK_HOME nor the pyspark package is installed")
    return pathlib.Path(spec.origin).parent


def hadoop_version(home: pathlib.Path) -> str | None:
    for jar in (home / "jars").glob("hadoop-client-api-*.jar"):
        return jar.stem.removeprefix("hadoop-client-api-")
    return None


def s3a_jars(home: pathlib.Path) -> pathlib.Path | None:
    """Where hadoop-aws and its SDK bundle are, when Spark's own jars/ lacks them: $STRATUS_SPARK_EXTRA_JARS,
    else the cache that hack/spark-jars.sh fills."""
    if list((home / "jars").glob("hadoop-aws-*.jar")):
        return None
    if os.environ.get(S3A_JARS_ENV):
        return pathlib.Path(os.environ[S3A_JARS_ENV])
    version = hadoop_version(home)
    cache = pathlib.Path(os.environ.get("STRATUS_CACHE") or pathlib.Path.home() / ".cache" / "stratus")
    d = cache / "spark-jars" / f"hadoop-aws-{version}"
    return d if d.is_dir() else None


def listen_host() -> str:
    return os.environ.get("STRATUS_LISTEN_HOST") or os.environ.get("POD_IP") or socket.gethostname()


def port(name: str, default: int) -> str:
    return os.environ.get(f"STRATUS_PORT_{name}") or str(default)


def _env(home: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_NO_DAEMONIZE="1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    if os.environ.get("STRATUS_LISTEN_HOST"):
        env["SPARK_LOCAL_IP"] = os.environ["STRATUS_LISTEN_HOST"]
    for d in ("SPARK_LOCAL_DIRS", "SPARK_WORKER_DIR"):
        if env.get(d):
            pathlib.Path(env[d]).mkdir(parents=True, exist_ok=True)
    return env


def daemon_argv(role: str, home: pathlib.Path, env: dict[str, str]) -> list[str]:
    host = listen_host()
    spark_class = str(home / "bin" / "spark-class")
    if role == "master":
        return [spark_class, "org.apache.spark.deploy.master.Master", "--host", host,
                "--port", port("SPARK", dp.MASTER_PORT), "--webui-port", port("UI", dp.MASTER_UI_PORT)]
    master = env.get("STRATUS_SPARK_MASTER")
    if not master:
        raise SystemExit("stratus spark worker: STRATUS_SPARK_MASTER is not set")
    argv = [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", host,
            "--port", port("SPARK", dp.WORKER_PORT), "--webui-port", port("UI", dp.WORKER_UI_PORT)]
    if env.get("SPARK_WORKER_CORES"):
        argv += ["--cores", env["SPARK_WORKER_CORES"]]
    if env.get("SPARK_WORKER_MEMORY"):
        argv += ["--memory", env["SPARK_WORKER_MEMORY"]]
    if env.get("SPARK_WORKER_DIR"):
        argv += ["--work-dir", env["SPARK_WORKER_DIR"]]
    return argv + [master]


def exec_daemon(role: str) -> None:
    home = spark_home()
    env = _env(home)
    argv = daemon_argv(role, home, env)
    os.execve(argv[0], argv, env)


# ---------------------------------------------------------------------------- the driver


def bucket_properties(env: dict[str, str]) -> dict[str, str]:
    """Per-bucket s3a settings (fs.s3a.bucket.<name>.*) from the STRATUS_BUCKET_<i>_* env."""
    props: dict[str, str] = {}
    for i in range(int(env.get("STRATUS_SPARK_BUCKETS", "0") or 0)):
        get = lambda k: env.get(f"STRATUS_BUCKET_{i}_{k}", "")  # noqa: E731
        name = get("NAME")
        if not name:
            continue
        pre = f"spark.hadoop.fs.s3a.bucket.{name}."
        endpoint = get("ENDPOINT")
        props.update({
            pre + "endpoint": endpoint,
            pre + "endpoint.region": get("REGION") or "us-east-1",
            pre + "path.style.access": "true",
            pre + "connection.ssl.enabled": "true" if endpoint.startswith("https") else "false",
            pre + "access.key": get("ACCESS_KEY"),
            pre + "secret.key": get("SECRET_KEY"),
            pre + "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        })
    return props


def driver_properties(env: dict[str, str], home: pathlib.Path) -> dict[str, str]:
    props = dict(json.loads(env.get("STRATUS_SPARK_CONF") or "{}"))
    props.setdefault("spark.pyspark.python", env.get("PYSPARK_PYTHON") or sys.executable)
    props["spark.driver.host"] = listen_host()
    if env.get("STRATUS_LISTEN_HOST"):
        props["spark.driver.bindAddress"] = env["STRATUS_LISTEN_HOST"]
    props["spark.ui.port"] = port("UI", 4040)
    jars = s3a_jars(home)
    if jars is not None:
        cp = f"{jars}/*"
        props["spark.driver.extraClassPath"] = cp
        props["spark.executor.extraClassPath"] = cp
    props.update(bucket_properties(env))
    return props


def submit_argv(env: dict[str, str], home: pathlib.Path, properties_file: str, args: list[str]) -> list[str]:
    executors = int(env.get("STRATUS_SPARK_EXECUTORS", "1"))
    cores = int(env.get("STRATUS_SPARK_EXECUTOR_CORES", "1"))
    argv = [str(home / "bin" / "spark-submit"), "--master", env["STRATUS_SPARK_MASTER"], "--deploy-mode", "client",
            "--name", env.get("STRATUS_SPARK_APP_NAME", "stratus"), "--properties-file", properties_file,
            "--driver-memory", env.get("STRATUS_SPARK_DRIVER_MEMORY", "512m"),
            "--executor-memory", env.get("STRATUS_SPARK_EXECUTOR_MEMORY", "512m"),
            "--executor-cores", str(cores), "--total-executor-cores", str(executors * cores)]
    if env.get("STRATUS_SPARK_MAIN_CLASS"):
        argv += ["--class", env["STRATUS_SPARK_MAIN_CLASS"]]
    return argv + [env["STRATUS_SPARK_RESOURCE"]] + args


def termination_message(lines: list[str], code: int, limit: int = 4000) -> str:
    """The output's tail, with the failure line kept even when it scrolled out of the tail."""
    tail = "\n".join(lines[-30:])
    if code != 0:
        reason = dp.failure_reason("\n".join(lines))
        if reason not in tail:
            tail = reason + "\n...\n" + tail
    return tail[-limit:]


def run_driver(args: list[str]) -> int:
    home = spark_home()
    env = _env(home)
    last: collections.deque[str] = collections.deque(maxlen=400)
    with tempfile.TemporaryDirectory(prefix="stratus-driver-") as tmp:
        props = pathlib.Path(tmp) / "spark.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            for k, v in sorted(driver_properties(env, home).items()):
                f.write(f"{k}={_escape(v)}\n")
        # The credentials are in the file only: the child's env is cleaned of them.
        child_env = {k: v for k, v in env.items() if not k.startswith("STRATUS_BUCKET_")}
        proc = subprocess.Popen(submit_argv(env, home, str(props), args), env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            last.append(line.rstrip("\n"))
        code = proc.wait()
    path = os.environ.get("STRATUS_TERMINATION_LOG") or "/dev/termination-log"
    try:
        pathlib.Path(path).write_text(termination_message(list(last), code))
    except OSError:
        pass
    return code


def _escape(value: str) -> str:
    """A java.util.Properties value: backslashes and line breaks escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
