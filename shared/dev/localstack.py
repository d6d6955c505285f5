"""Cascade local stack: owns starting/stopping the local emulators and phase-function processes.

Every process is started in its own session / process group (``start_new_session=True``), logs to
``STATE_DIR/logs/<name>.log`` and is recorded in ``STATE_DIR/pids/<name>.json`` together with its
port and the start time of its leader (field 22 of ``/proc/<pid>/stat``).  Only groups whose recorded
leader is verifiably the same process are ever signalled, so a stale pid file can never make
:meth:`LocalStack.stop` kill an unrelated process.

CLI: ``python -m cascade.dev.localstack start|stop|status --state-dir DIR [--project P]``; ``start``
prints ``export KEY=VALUE`` lines for :meth:`Endpoints.as_env`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from cascade.dev.emulators import EMULATORS, HOST, Endpoints, LocalStackError, emulator_spec

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    """True if something listens on 127.0.0.1:*port* (the emulators hang instead of exiting then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def reset_firestore(endpoints: Endpoints) -> None:
    """Delete every document in the Firestore emulator's default database."""
    url = f"http://{endpoints.firestore}/emulator/v1/projects/{endpoints.project}/databases/(default)/documents"
    with requests.Session() as session:
        session.trust_env = False  # never route 127.0.0.1 through a proxy
        session.delete(url, timeout=10).raise_for_status()


def _http_ready(ready: Mapping[str, object]) -> bool:
    """True if ready["url"] answers: status 200 (+ body ready["body"]), or any status < 500 if ready["any_status"]."""
    try:
        with requests.Session() as session:
            session.trust_env = False
            resp = session.get(str(ready["url"]), timeout=2)
    except requests.RequestException:
        return False
    if ready.get("any_status"):
        return resp.status_code < 500
    return resp.status_code == 200 and (ready.get("body") is None or resp.text.strip() == ready["body"])


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, pgid, session id, start time in clock ticks) of *pid*, or None if it does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
    return fields[0], int(fields[2]), int(fields[3]), int(fields[19])


def _members(rec: Mapping[str, int]) -> list[int]:
    """Live (non-zombie) processes of the group recorded in *rec*; [] if the group is not ours.

    The group is ours if its leader still has the recorded start time. If the leader is gone, the
    processes left in its session that started no earlier than it are still ours: the pid, and so
    the session id, cannot be reused while that session has members.
    """
    pgid, started = int(rec["pid"]), int(rec["start_time"])
    if pgid <= 1 or pgid == os.getpgrp():
        return []
    leader = _proc_stat(pgid)
    if leader is not None and leader[3] != started:
        return []  # the pid now belongs to someone else
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st and st[1] == pgid and st[2] == pgid and st[3] >= started and st[0] != "Z":
                found.append(int(entry.name))
    return found


def _leader_alive(rec: Mapping[str, int]) -> bool:
    """True if the recorded group leader itself still runs (the recorded pid, same start time, not a
    zombie). A group whose leader died is a crashed process: what is left of it (an orphaned worker)
    is stopped, never reused."""
    st = _proc_stat(int(rec["pid"]))
    return st is not None and st[3] == int(rec["start_time"]) and st[0] not in ("Z", "X")


def _listeners(port: int) -> list[int]:
    """Pids holding a listening TCP socket on *port* (IPv4 or IPv6), from /proc; [] if none is
    visible (another user's processes may not be)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    pids = []
    if not inodes:
        return pids
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") in inodes:
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(pids)


def _describe_pids(pids: list[int]) -> str:
    out = []
    for pid in pids[:5]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"pid {pid} ({cmd[:120]})")
    return ", ".join(out) or "a process this user cannot see"


def _log_tail(path: Path, lines: int = 25) -> str:
    """The last *lines* lines of *path* (indented), for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in text.splitlines()[-lines:]) or "  (log is empty)"


class LocalStack:
    """Starts, tracks and stops local processes under one state directory."""

    def __init__(self, state_dir: Path, project: str = "cascade-local", log: Callable[[str], object] = print,
                 bq_latency_s: float | None = None):
        """``bq_latency_s``: start the BigQuery emulator with the production latency model (benchmarks
        only; see docs/latency-model.md). None - the default, and what the tests use - runs it as shipped."""
        self.state_dir = Path(state_dir).resolve()
        self.project = project
        self.bq_latency_s = bq_latency_s
        self.log = log
        self.pid_dir = self.state_dir / "pids"
        self.log_dir = self.state_dir / "logs"
        self.gcloud_config = self.state_dir / "gcloud-config"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- public API

    def start_emulators(self, ports: dict[str, int] | None = None) -> Endpoints:
        """Start (or reuse) pubsub, firestore, bigquery and storage in parallel; wait until all answer.

        ``ports`` maps emulator name -> port; missing names get free ports. A recorded emulator that is
        alive, on the requested port and for this project is reused; anything else recorded is stopped.
        """
        ports = dict(ports or {})
        if unknown := sorted(set(ports) - set(EMULATORS)):
            raise LocalStackError(f"unknown emulator(s) {unknown}; expected some of {list(EMULATORS)}")
        with self._locked(EMULATORS):
            waiting: dict[str, dict] = {}
            for name in EMULATORS:
                rec = self._read(name)
                if rec and rec.get("project") == self.project and ports.get(name, rec["port"]) == rec["port"] \
                        and (name != "bigquery" or rec.get("bq_latency_s") == self.bq_latency_s) and _members(rec):
                    waiting[name] = rec
                elif rec:
                    self._terminate({name: rec})
            used = {rec["port"] for rec in waiting.values()}
            for name, port in ports.items():
                if name not in waiting and (port in used or _port_in_use(port)):
                    raise LocalStackError(f"cannot start {name}: port {HOST}:{port} is already in use")
                used.add(port)
            for name in (n for n in EMULATORS if n not in waiting):
                port = ports.get(name) or self._pick_port(used)
                argv, env, ready, extra = self._emulator_spec(name, port, used)
                waiting[name] = self._launch(name, argv, env, self.state_dir, port, ready, extra)
            self._wait_all(waiting, READY_TIMEOUT)
        eps = self.endpoints()
        assert eps is not None, "emulators are recorded and ready"
        return eps

    def start_process(
        self, name: str, argv: list[str], env: dict[str, str], ready_url: str, cwd: Path | None = None,
        timeout: float = 60, meta: dict[str, Any] | None = None,
    ) -> bool:
        """Start (or reuse) one process, e.g. a functions-framework server, and wait for *ready_url*.

        *env* is layered over os.environ. The process is ready once *ready_url* gives any HTTP answer
        below 500. A recorded process that is alive with the same argv/env/cwd/*meta* is reused; if
        those differ it is stopped and started again. A recorded process whose group leader died (it
        crashed, or was killed) is never reused: whatever is left of its process group (an orphaned
        worker may still hold the port) is stopped first, then it is started again. *meta* (JSON data,
        e.g. the versions of the code it runs) is recorded with the process and returned by
        :meth:`running`. True if it was (re)started. A port held by a process that is not ours is a
        LocalStackError naming it and the next step.
        """
        if not _NAME_RE.match(name):
            raise LocalStackError(f"invalid process name {name!r} (letters, digits, '_', '.', '-')")
        port = urlparse(ready_url).port
        if port is None:
            raise LocalStackError(f"ready_url {ready_url!r} for {name} must include a port")
        parts: list[Any] = [argv, env, str(cwd)] + ([meta] if meta else [])
        fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        with self._locked([name]):
            rec = self._read(name)
            started = not (rec and rec.get("fingerprint") == fingerprint and _leader_alive(rec) and _members(rec))
            if started:
                if rec:
                    if not _leader_alive(rec) and _members(rec):
                        self.log(f"localstack: {name} crashed (pid {rec['pid']} is gone); stopping what is left of "
                                 f"its process group before starting it again")
                    self._terminate({name: rec})
                if _port_in_use(port):
                    held = _listeners(port)
                    if rec and rec.get("port") == port:
                        self._write(name, rec)  # keep the port on record: the next `up` starts it there again
                    raise LocalStackError(
                        f"cannot start {name}: port {HOST}:{port} is already in use by {_describe_pids(held)}, "
                        f"which `cascade up` did not start. Next step: stop that process and run `cascade up` "
                        f"again (or run `cascade down` then `cascade up`, which starts the functions on new ports)")
                ready = {"url": ready_url, "any_status": True}
                rec = self._launch(name, argv, {**os.environ, "CLOUDSDK_CONFIG": str(self.gcloud_config), **env},
                                   cwd, port, ready, {"fingerprint": fingerprint, **({"meta": meta} if meta else {})})
            self._wait_all({name: rec}, timeout)
        return started

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop the recorded process groups *names* (default: all); returns the names actually stopped.

        SIGTERM to each verified group, up to STOP_TIMEOUT s grace, then SIGKILL. Pid files are removed
        either way; a group whose leader is no longer the recorded process is never signalled.
        """
        if names is None:
            names = sorted(p.stem for p in self.pid_dir.glob("*.json")) if self.pid_dir.is_dir() else []
        with self._locked(names):
            recs = {name: rec for name in names if (rec := self._read(name)) is not None}
            return self._terminate(recs)

    def running(self) -> dict[str, dict]:
        """name -> {"pid", "port", "alive", "crashed", "meta"} for every recorded process (alive: some
        process of its group runs; crashed: its leader is gone; meta: what :meth:`start_process`
        recorded, else {})."""
        out: dict[str, dict] = {}
        for path in sorted(self.pid_dir.glob("*.json")) if self.pid_dir.is_dir() else []:
            if rec := self._read(path.stem):
                out[path.stem] = {"pid": rec["pid"], "port": rec["port"], "alive": bool(_members(rec)),
                                  "crashed": not _leader_alive(rec), "meta": rec.get("meta") or {}}
        return out

    def endpoints(self) -> Endpoints | None:
        """Endpoints of the recorded emulators, or None unless all four are recorded and alive."""
        recs = {name: self._read(name) for name in EMULATORS}
        if not all(rec and _members(rec) for rec in recs.values()):
            return None
        port = {name: rec["port"] for name, rec in recs.items() if rec}
        project = str(recs["bigquery"]["project"]) if recs["bigquery"] else self.project
        return Endpoints(project, f"{HOST}:{port['pubsub']}", f"{HOST}:{port['firestore']}",
                         f"http://{HOST}:{port['bigquery']}", f"http://{HOST}:{port['storage']}")

    # ---------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _locked(self, names: Iterable[str]) -> Iterator[None]:
        """Hold an exclusive flock per name so concurrent starts/stops of one name serialize."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            for name in sorted(set(names)):
                fh = stack.enter_context((self.pid_dir / f"{name}.lock").open("a"))
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _read(self, name: str) -> dict | None:
        path = self.pid_dir / f"{name}.json"
        try:
            rec = json.loads(path.read_text())
            int(rec["pid"]), int(rec["start_time"]), int(rec["port"])
            return rec
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self.log(f"localstack: removing unreadable pid file {path}")
            path.unlink(missing_ok=True)
            return None

    def _pick_port(self, used: set[int]) -> int:
        while (port := free_port()) in used:
            pass
        used.add(port)
        return port

    def _emulator_spec(self, name: str, port: int, used: set[int]) -> tuple[list[str], dict[str, str], dict, dict]:
        return emulator_spec(name, port, self.project, self.gcloud_config, lambda: self._pick_port(used),
                             bq_latency_s=self.bq_latency_s)

    def _launch(self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path | None, port: int,
                ready: dict, extra: dict) -> dict:
        """Popen *argv* in a new session with output to logs/<name>.log and record it in pids/<name>.json."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.gcloud_config.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(argv)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=fh,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise LocalStackError(f"cannot start {name} ({shlex.join(argv)}): {exc}") from exc
        stat = _proc_stat(proc.pid)
        assert stat is not None, "our unreaped child must exist"
        self._children[proc.pid] = proc
        rec = {"name": name, "pid": proc.pid, "start_time": stat[3], "port": port, "argv": argv,
               "cwd": str(cwd) if cwd else None, "log": str(log_path), "ready": ready, **extra}
        self._write(name, rec)
        rec["_launched"] = time.monotonic()
        return rec

    def _write(self, name: str, rec: Mapping[str, Any]) -> None:
        """Record *rec* as pids/<name>.json (atomically)."""
        tmp = self.pid_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps({k: v for k, v in rec.items() if not k.startswith("_")}, indent=2))
        tmp.replace(self.pid_dir / f"{name}.json")

    def _wait_ready(self, rec: dict, timeout: float) -> None:
        name, port = rec.get("label", rec["name"]), rec["port"]
        deadline = time.monotonic() + timeout
        while not _http_ready(rec["ready"]):
            if not _members(rec):
                proc = self._children.get(rec["pid"])
                code = f" with exit code {proc.poll()}" if proc and proc.poll() is not None else ""
                raise LocalStackError(f"{name} exited{code} before becoming ready on {HOST}:{port}; "
                                      f"last log lines ({rec['log']}):\n{_log_tail(Path(rec['log']))}")
            if time.monotonic() > deadline:
                raise LocalStackError(f"{name} did not become ready on {HOST}:{port} within {timeout:g} s; "
                                      f"last log lines ({rec['log']}):\n{_log_tail(Path(rec['log']))}")
            time.sleep(POLL_INTERVAL)
        if "_launched" in rec:
            self.log(f"localstack: {name} ready on {HOST}:{port} (pid {rec['pid']}) after "
                     f"{time.monotonic() - rec['_launched']:.1f} s")
        else:
            self.log(f"localstack: reusing {name} on {HOST}:{port} (pid {rec['pid']})")

    def _wait_all(self, recs: dict[str, dict], timeout: float) -> None:
        """Wait for all *recs* in parallel; stop the ones that fail and raise one combined error."""
        with ThreadPoolExecutor(max_workers=max(1, len(recs))) as pool:
            futures = {name: pool.submit(self._wait_ready, rec, timeout) for name, rec in recs.items()}
        failed = {name: fut.exception() for name, fut in futures.items() if fut.exception() is not None}
        if failed:
            self._terminate({name: recs[name] for name in failed})
            raise LocalStackError("\n".join(str(exc) for exc in failed.values()))

    def _terminate(self, recs: dict[str, dict]) -> list[str]:
        """SIGTERM the verified groups in *recs*, SIGKILL after STOP_TIMEOUT; remove their pid files."""
        live = {name: rec for name, rec in recs.items() if _members(rec)}
        for name, rec in live.items():
            self.log(f"localstack: stopping {name} (pid {rec['pid']}, port {rec['port']})")
            self._signal(rec, signal.SIGTERM)
            self._signal(rec, signal.SIGCONT)  # a stopped process handles its SIGTERM only once continued
        deadline, killed = time.monotonic() + STOP_TIMEOUT, False
        while left := [name for name, rec in live.items() if _members(rec)]:
            if time.monotonic() > deadline:
                if killed:
                    self.log(f"localstack: WARNING {', '.join(left)} survived SIGKILL")
                    break
                self.log(f"localstack: {', '.join(left)} ignored SIGTERM for {STOP_TIMEOUT:g} s; sending SIGKILL")
                for name in left:
                    self._signal(live[name], signal.SIGKILL)
                deadline, killed = time.monotonic() + 5, True
            self._reap()
            time.sleep(0.05)
        for name in recs:
            (self.pid_dir / f"{name}.json").unlink(missing_ok=True)
        self._reap()
        return sorted(live)

    def _signal(self, rec: Mapping[str, int], sig: signal.Signals) -> None:
        if _members(rec):  # re-verify right before signalling
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(rec["pid"]), sig)

    def _reap(self) -> None:
        """Collect exit statuses of our own finished children so they do not linger as zombies."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: start | stop | status."""
    parser = argparse.ArgumentParser(prog="python -m cascade.dev.localstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("CASCADE_STATE_DIR", ".cascade")))
    parser.add_argument("--project", default="cascade-local")
    args = parser.parse_args(argv)
    stack = LocalStack(args.state_dir, project=args.project, log=lambda msg: print(msg, file=sys.stderr))
    try:
        if args.command == "start":
            for key, value in stack.start_emulators().as_env().items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "stop":
            stopped = stack.stop()
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}", file=sys.stderr)
        else:
            for name, info in stack.running().items():
                print(f"{name}: pid={info['pid']} port={info['port']} {'alive' if info['alive'] else 'DEAD'}")
            return 0 if stack.endpoints() else 1
    except LocalStackError as exc:
        print(f"localstack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
