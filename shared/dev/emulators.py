"""The four local emulators: how each is launched, where it answers, and how clients find it.

Pub/Sub and Firestore are gcloud components (Java); BigQuery is bqemulator (through
``emulators/bqemulator_offline.py``, which skips its spatial-extension download); GCS is
gcp-storage-emulator. ``Endpoints`` carries their addresses in the forms the clients expect.
Starting and stopping the processes is ``cascade.dev.localstack``'s job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
EMULATORS: tuple[str, ...] = ("pubsub", "firestore", "bigquery", "storage")
DEFAULT_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
BQ_LAUNCHER = Path(__file__).resolve().parents[2] / "emulators" / "bqemulator_offline.py"
BQ_LATENCY_ENV = "CASCADE_BQ_JOB_LATENCY_S"  # read by the launcher; only set through bq_latency_s
BQ_MIN_LATENCY_S = 0.5  # the latency model's floor (emulators/latency_model.py MIN_LATENCY_S)
PREREQS_HINT = "run emulators/check-prereqs.sh for install instructions"
_ENV_VARS = {  # Endpoints field -> environment variable
    "project": "CASCADE_PROJECT",
    "pubsub": "PUBSUB_EMULATOR_HOST",
    "firestore": "FIRESTORE_EMULATOR_HOST",
    "bigquery": "BIGQUERY_EMULATOR_HOST",
    "storage": "STORAGE_EMULATOR_HOST",
}
_sdk_root_cache: Path | None = None


class LocalStackError(RuntimeError):
    """A local process could not be started, found or stopped."""


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the four running emulators, in the forms their clients expect."""

    project: str
    pubsub: str  # "127.0.0.1:PORT"
    firestore: str  # "127.0.0.1:PORT"
    bigquery: str  # "http://127.0.0.1:PORT" (REST)
    storage: str  # "http://127.0.0.1:PORT"

    def as_env(self) -> dict[str, str]:
        """Environment variables that point clients (and gcloud) at these emulators."""
        env = {var: getattr(self, field) for field, var in _ENV_VARS.items()}
        env["GOOGLE_CLOUD_PROJECT"] = env["CLOUDSDK_CORE_PROJECT"] = self.project
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Endpoints:
        """Inverse of :meth:`as_env`; raises LocalStackError naming every missing variable."""
        missing = [var for var in _ENV_VARS.values() if not env.get(var)]
        if missing:
            raise LocalStackError(
                f"missing environment variable(s) {', '.join(missing)}; start the emulators with "
                "emulators/start.sh and eval its output"
            )
        return cls(**{field: env[var] for field, var in _ENV_VARS.items()})


def sdk_root(gcloud_config: Path) -> Path:
    global _sdk_root_cache
    if _sdk_root_cache is None:
        _sdk_root_cache = DEFAULT_SDK_ROOT
        if gcloud := shutil.which("gcloud"):
            try:
                out = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"],
                                     env={**os.environ, "CLOUDSDK_CONFIG": str(gcloud_config)},
                                     capture_output=True, text=True, timeout=60, check=True).stdout.strip()
                _sdk_root_cache = Path(out) if out else DEFAULT_SDK_ROOT
            except (OSError, subprocess.SubprocessError):
                pass
    return _sdk_root_cache

def emulator_spec(name: str, port: int, project: str, gcloud_config: Path,
              pick_port: Callable[[], int], bq_latency_s: float | None = None,
              ) -> tuple[list[str], dict[str, str], dict, dict]:
    """(argv, env, readiness check, extra record fields) to start emulator *name* on *port*.

    ``bq_latency_s`` (BigQuery only, benchmarks only) starts bqemulator with the production latency
    model (``emulators/latency_model.py``): that fixed latency per job, 2 mutating DML per table.
    Without it the model is off, even if ``CASCADE_BQ_JOB_LATENCY_S`` is set in the environment.
    """
    env = {**os.environ, "CLOUDSDK_CONFIG": str(gcloud_config)}
    env.pop(BQ_LATENCY_ENV, None)
    base = f"http://{HOST}:{port}"
    extra: dict = {"project": project, "label": f"{name} emulator"}
    if name in ("pubsub", "firestore"):
        if shutil.which("java") is None:
            raise LocalStackError(f"java is not on PATH (needed by the {name} emulator); {PREREQS_HINT}")
        sdk = sdk_root(gcloud_config)
        if name == "pubsub":
            exe = sdk / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
            argv = [str(exe), f"--host={HOST}", f"--port={port}"]
        else:
            exe = sdk / "platform/cloud-firestore-emulator/cloud_firestore_emulator"
            argv = [str(exe), "start", f"--host={HOST}", f"--port={port}"]
        if not exe.exists():
            raise LocalStackError(f"{exe} not found (gcloud component missing); {PREREQS_HINT}")
        return argv, env, {"url": base + "/", "body": "Ok"}, extra
    if name == "bigquery":
        extra["grpc_port"] = pick_port()
        env["BQEMU_ENABLE_FORMAT_EXTENSIONS"] = "false"
        argv = [sys.executable, str(BQ_LAUNCHER), "start", "--project", project,
                "--rest-port", str(port), "--grpc-port", str(extra["grpc_port"])]
        extra["bq_latency_s"] = bq_latency_s
        if bq_latency_s is not None:
            if not bq_latency_s >= BQ_MIN_LATENCY_S:
                raise LocalStackError(f"bq_latency_s must be at least {BQ_MIN_LATENCY_S} s, got {bq_latency_s!r}")
            argv[2:2] = ["--job-latency-s", repr(float(bq_latency_s))]
        return argv, env, {"url": f"{base}/bigquery/v2/projects/{project}/datasets"}, extra
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    if not exe.exists():
        raise LocalStackError(f"{exe} not found; install requirements.txt into the venv")
    argv = [str(exe), "start", f"--host={HOST}", f"--port={port}", "--in-memory"]
    return argv, env, {"url": f"{base}/storage/v1/b?project={project}"}, extra

