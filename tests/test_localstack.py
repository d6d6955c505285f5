"""Tests for cascade.dev.localstack: real emulators, real clients, process bookkeeping.

Run: PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 .venv/bin/pytest -q tests/test_localstack.py
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repo root is not on sys.path when pytest runs from .venv/bin
    sys.path.insert(0, str(ROOT))

from cascade.dev.localstack import (  # noqa: E402
    EMULATORS,
    Endpoints,
    LocalStack,
    LocalStackError,
    _proc_stat,
    free_port,
    reset_firestore,
)

PROJECT = "cascade-test"


def _port_open(hostport: str) -> bool:
    host, port = hostport.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Endpoints]]:
    ls = LocalStack(tmp_path_factory.mktemp("state"), project=PROJECT, log=lambda msg: None)
    try:
        yield ls, ls.start_emulators()
    finally:
        ls.stop()


@pytest.fixture()
def env(stack: tuple[LocalStack, Endpoints], monkeypatch: pytest.MonkeyPatch) -> Endpoints:
    eps = stack[1]
    for key, value in eps.as_env().items():
        monkeypatch.setenv(key, value)
    return eps


def test_endpoints_env_roundtrip() -> None:
    eps = Endpoints(PROJECT, "127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3", "http://127.0.0.1:4")
    env = eps.as_env()
    assert env["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:1"
    assert env["GOOGLE_CLOUD_PROJECT"] == env["CLOUDSDK_CORE_PROJECT"] == env["CASCADE_PROJECT"] == PROJECT
    assert Endpoints.from_env(env) == eps
    del env["FIRESTORE_EMULATOR_HOST"]
    with pytest.raises(LocalStackError, match="FIRESTORE_EMULATOR_HOST"):
        Endpoints.from_env(env)


def test_pubsub(env: Endpoints) -> None:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "t-" + uuid.uuid4().hex[:8])
    sub = subscriber.subscription_path(PROJECT, "s-" + uuid.uuid4().hex[:8])
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    assert publisher.publish(topic, b"hello", k="v").result(timeout=10)
    resp = subscriber.pull(subscription=sub, max_messages=1, timeout=10)
    assert [m.message.data for m in resp.received_messages] == [b"hello"]
    assert resp.received_messages[0].message.attributes["k"] == "v"


def test_firestore(env: Endpoints) -> None:
    from google.cloud import firestore

    doc = firestore.Client(project=PROJECT).collection("things").document("a")
    doc.set({"n": 1})
    assert doc.get().to_dict() == {"n": 1}
    reset_firestore(env)
    assert not doc.get().exists


def test_bigquery(env: Endpoints) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                             client_options=ClientOptions(api_endpoint=env.bigquery))
    client.create_dataset("ds_test")
    assert [d.dataset_id for d in client.list_datasets()] == ["ds_test"]
    assert [tuple(row) for row in client.query("SELECT 1 AS x").result()] == [(1,)]


def test_storage(env: Endpoints) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    bucket = client.create_bucket("cascade-test-bucket")
    bucket.blob("dir/x.txt").upload_from_string(b"payload")
    assert client.bucket("cascade-test-bucket").blob("dir/x.txt").download_as_bytes() == b"payload"


def test_second_start_reuses_processes(stack: tuple[LocalStack, Endpoints]) -> None:
    ls, eps = stack
    before = ls.running()
    assert set(before) == set(EMULATORS) and all(info["alive"] for info in before.values())
    assert ls.start_emulators() == eps
    assert LocalStack(ls.state_dir, project=PROJECT, log=lambda m: None).endpoints() == eps
    assert ls.running() == before


def test_start_process_http_server(tmp_path: Path) -> None:
    ls = LocalStack(tmp_path / "state", log=lambda msg: None)
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}/"
    (tmp_path / "hello.txt").write_text("hi")
    try:
        ls.start_process("web", argv, env={"A": "1"}, ready_url=url, cwd=tmp_path, timeout=10)
        assert requests.get(url + "hello.txt", timeout=5).text == "hi"
        pid = ls.running()["web"]["pid"]
        assert (tmp_path / "state/logs/web.log").exists()
        ls.start_process("web", argv, env={"A": "1"}, ready_url=url, cwd=tmp_path, timeout=10)
        assert ls.running()["web"]["pid"] == pid  # same argv/env/cwd: reused
        ls.start_process("web", argv, env={"A": "2"}, ready_url=url, cwd=tmp_path, timeout=10)
        assert ls.running()["web"]["pid"] != pid  # env changed: restarted
    finally:
        assert ls.stop(["web"]) == ["web"]
    assert not _port_open(f"127.0.0.1:{port}")
    assert ls.running() == {}


def test_start_process_failures_are_reported(tmp_path: Path) -> None:
    ls = LocalStack(tmp_path, log=lambda msg: None)
    crash = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
    with pytest.raises(LocalStackError, match=r"(?s)crash exited with exit code 3.*boom"):
        ls.start_process("crash", crash, env={}, ready_url=f"http://127.0.0.1:{free_port()}/", timeout=10)
    port = free_port()
    with pytest.raises(LocalStackError, match=rf"hang did not become ready on 127.0.0.1:{port} within 0.5 s"):
        ls.start_process("hang", ["sleep", "60"], env={}, ready_url=f"http://127.0.0.1:{port}/", timeout=0.5)
    assert ls.running() == {}  # the hung process was stopped, its pid file removed
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(LocalStackError, match="already in use"):
            ls.start_process("dup", ["sleep", "60"], env={}, ready_url=f"http://127.0.0.1:{taken}/", timeout=5)


def test_stop_escalates_to_sigkill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cascade.dev.localstack as localstack

    monkeypatch.setattr(localstack, "STOP_TIMEOUT", 0.3)
    ls = LocalStack(tmp_path, log=lambda msg: None)
    port = free_port()
    stubborn = ("import signal, http.server; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()")
    ls.start_process("stubborn", [sys.executable, "-c", stubborn], env={}, ready_url=f"http://127.0.0.1:{port}/",
                     cwd=tmp_path, timeout=10)
    assert ls.stop() == ["stubborn"]
    assert not _port_open(f"127.0.0.1:{port}")


def test_stop_stops_only_what_it_started(stack: tuple[LocalStack, Endpoints]) -> None:
    """Last in this module (pytest keeps file order): stops the shared emulators."""
    ls, eps = stack
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stat = _proc_stat(bystander.pid)
        assert stat is not None
        fake = {"name": "impostor", "pid": bystander.pid, "start_time": stat[3] - 1, "port": 1, "log": "x"}
        (ls.pid_dir / "impostor.json").write_text(json.dumps(fake))
        assert sorted(ls.stop()) == sorted(EMULATORS)
        assert bystander.poll() is None, "stop() must not signal a process it did not start"
        for hostport in (eps.pubsub, eps.firestore, eps.bigquery, eps.storage):
            assert not _port_open(hostport), hostport
        assert ls.running() == {} and ls.endpoints() is None
        assert ls.stop() == []
    finally:
        bystander.kill()
        bystander.wait()
