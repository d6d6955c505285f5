"""Lost triggers are found and delivered again: a re-trigger the sweeper could not publish, a
published trigger no function ever picked up, and the messages pushed while a local phase function
was down (restarted by ``cascade up`` on the port its push subscription points at).

Time moves with an injected clock where the sweeper decides by age; everything else waits on state
with deadlines (``wait_until``), never on fixed sleeps.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from cascade.dev.faults import InjectedCrash
from cascade.ops.date_status import date_status
from cascade.ops.sweeper import sweep

from .harness import FakeClock

D = date(2025, 1, 15)


def test_sweeper_retries_a_republish_that_failed(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 60})
    h.write_raw(D, D)
    inject(f"before_merge:nbac_schedule@{D}*1")
    with pytest.raises(InjectedCrash):
        h.deliver(h.trigger(D, strict_mode=False, processors=("nbac_schedule",)))
    clock.advance(61)  # the crashed run's lease expires
    inject("publish*1")  # the sweeper's re-trigger of it cannot be published (once)
    first = sweep(h.app)
    assert first.expired == []
    assert len(first.errors) == 1 and "nbac_schedule" in first.errors[0] and "next step" in first.errors[0]
    assert h.pull(2) == []
    # Nothing was re-triggered, so nothing may look repaired: the next sweep still finds it.
    second = sweep(h.app)
    assert second.ok and len(second.expired) == 1 and "nbac_schedule" in second.expired[0]
    part = h.app.tracker.partition("nbac_schedule", D)
    assert part.status == "failed" and "lease expired" in part.error
    retrigger = h.pull(2)
    assert len(retrigger) == 1 and retrigger[0]["processors"] == ["nbac_schedule"]
    assert sweep(h.app).expired == []  # repaired once
    h.deliver(json.dumps(retrigger[0]).encode(), phase=2)
    assert h.app.tracker.partition("nbac_schedule", D).status == "success"


def test_a_published_trigger_that_no_function_picked_up_is_republished_by_the_sweeper(make_harness):
    from cascade.ops.sweeper import not_started_after

    clock = FakeClock()
    h = make_harness(clock=clock)
    h.write_raw(D, D)
    assert h.deliver(h.trigger(D, strict_mode=False)).downstream == "published"
    lost = h.pull(3)  # phase 3's trigger was published ... and never delivered to a phase 3 function
    assert len(lost) == 1 and h.app.tracker.claim(2, D, 0)["status"] == "published"
    sweep(h.app)
    assert h.pull(3) == []  # too recent: its delivery may still be under way
    deadline = not_started_after(h.app.settings)
    clock.advance(deadline + 1)
    report = sweep(h.app)
    again = h.pull(3)
    assert len(again) == 1 and again[0]["generation"] == 0 and again[0]["phase"] == 2 and again[0]["kind"] == "completion"
    alerts = [a for a in h.alerts.alerts if "NOT STARTED" in a.title]
    assert len(alerts) == 1 and "Phase 3" in alerts[0].title and str(D) in alerts[0].title
    assert report.ok and len(report.not_started) == 1, report
    assert "phase 3" in report.not_started[0] and str(D) in report.not_started[0]
    assert sweep(h.app).not_started == []  # the re-publish starts a new deadline
    clock.advance(deadline + 1)
    assert len(sweep(h.app).not_started) == 1  # still nobody picked it up: re-published again ...
    assert len([a for a in h.alerts.alerts if "NOT STARTED" in a.title]) == 1  # ... alerted once
    copies = h.pull(3)
    assert len(copies) == 1
    for msg in again + copies:  # receivers dedupe: two copies run phase 3 once
        h.deliver(json.dumps(msg).encode(), phase=3)
    for proc in h.pipeline.processors_of(3):
        assert [r["status"] for r in h.app.tracker.runs(processor=proc.name, day=D)] == ["success"]
    clock.advance(deadline + 1)
    report = sweep(h.app)  # phase 3 began: its trigger is left alone (phase 4's, published by phase 3, is not)
    assert [x.split(":")[0] for x in report.not_started] == [f"phase 4 for {D} g0"]


def test_status_shows_a_phase_triggered_but_not_started(make_harness, capsys):
    from werkzeug.test import Client

    from cascade.ui.server import StatusPage

    h = make_harness()
    h.write_raw(D, D)
    h.deliver(h.trigger(D, strict_mode=False))  # phase 2 complete, phase 3 triggered, never delivered
    st = date_status(h.app, D)
    assert st["phases"]["2"]["triggered_next"]
    assert st["phases"]["3"]["status"] == "triggered-not-started" and st["phases"]["3"]["triggered_generation"] == 0
    assert st["phases"]["4"]["status"] == "missing"  # nothing triggered it yet
    capsys.readouterr()
    assert h.run_printed(f"cascade status --date {D}") == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("phase 3"))
    assert "TRIGGERED, NOT STARTED" in line, out
    assert h.run_printed(f"cascade wait --date {D} --phase 3 --timeout 1") == 2  # a wait's timeout says why
    assert "phase 3 was triggered and has not started" in capsys.readouterr().out
    page = StatusPage(h.app, start=D, end=D, refresh_s=1.0, slow_ttl=1.0)
    data = Client(page).get(f"/api/matrix?start={D}&end={D}").get_json()
    assert data["phases"][f"3|{D}"] == "triggered-not-started" and data["phases"][f"4|{D}"] == "missing"
    html = Client(page).get(f"/?start={D}&end={D}").get_data(as_text=True)
    assert "triggered, not started" in html and "r-triggered-not-started" in html
    for msg in h.pull(3):  # once phase 3 begins, it is no longer "not started"
        h.deliver(json.dumps(msg).encode(), phase=3)
    assert date_status(h.app, D)["phases"]["3"]["status"] == "complete"
    data = Client(page).get(f"/api/matrix?start={D}&end={D}").get_json()
    assert data["phases"][f"3|{D}"] == "complete"


# ------------------------------------------------------------------ a local phase function that crashed
def _cascade(*args: str) -> int:
    """``cascade ARGS`` in-process, as a person runs it after editing nothing (env set by the test)."""
    from cascade.cli import main as cascade_main

    try:
        return cascade_main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture()
def local_wide(stack, endpoints, make_harness, tmp_path, monkeypatch):
    """A two-phase pipeline (phase 2 -> phase 3) brought up with ``cascade up`` on the session's
    emulators (same state directory: ``up`` reuses them); yields (harness, phase 3 function name)."""
    from .harness import wide_pipeline

    h = make_harness(pipeline_file=wide_pipeline(tmp_path / "wide.yaml", width=2),
                     settings_overrides={"lease_seconds": 2, "busy_wait_seconds": 0, "republish_after_seconds": 0})
    for key, value in {"CASCADE_STATE_DIR": str(stack.state_dir), "CASCADE_NAMESPACE": h.namespace,
                       "CASCADE_PIPELINE_FILE": str(h.pipeline_file), "CASCADE_PROJECT": endpoints.project}.items():
        monkeypatch.setenv(key, value)
    names = [f"function-{h.namespace}-wide-phase-{n}" for n in (2, 3)]
    try:
        assert _cascade("up") == 0
        yield h, names[1]
    finally:
        stack.stop(names)


def _record(stack, name: str) -> dict:
    return json.loads((stack.state_dir / "pids" / f"{name}.json").read_text())


def _push_endpoint(h, phase: int) -> str:
    sub = h.subscriber.get_subscription(request={
        "subscription": h.subscriber.subscription_path(h.project, h.pipeline.push_subscription(phase))})
    return sub.push_config.push_endpoint


def test_a_phase_function_killed_and_restarted_by_cascade_up_loses_no_trigger(stack, local_wide):
    import os
    import signal

    from cascade.dev.localstack import _members
    from cascade.runtime import handoff

    from .harness import wait_until

    h, name = local_wide
    days = [date(2025, 1, d) for d in (13, 14, 15)]
    for day in days:  # phase 2 done in-process; its hand-off to phase 3 comes below
        h.deliver(h.trigger(day, strict_mode=False, skip_downstream_trigger=True))
    before = _record(stack, name)
    assert f":{before['port']}/" in _push_endpoint(h, 3)
    os.killpg(before["pid"], signal.SIGKILL)  # the phase 3 function dies, all of it
    assert wait_until(lambda: not _members(before), timeout=30)
    for day in days:  # ... and phase 3 is triggered while it is down: every push fails
        assert handoff.hand_off(h.app, 2, day, mode="daily", strict_mode=False,
                                correlation_id=f"lost-{day}").downstream == "published"
    assert _cascade("up") == 0
    after = _record(stack, name)
    assert after["pid"] != before["pid"] and after["port"] == before["port"]  # restarted on its recorded port
    assert f":{before['port']}/" in _push_endpoint(h, 3)  # the subscription was never repointed

    def ran() -> list[date]:
        return [d for d in days if h.app.tracker.partition("summary", d).status == "success"]
    # Pub/Sub redelivers the pushes that failed, to the same URL. The local emulator now and then
    # drops one instead (neither redelivered nor dead-lettered): the sweeper finds each trigger that
    # was published and never picked up, and publishes it again.
    wait_until(lambda: len(ran()) == len(days), timeout=30)
    missing = [d for d in days if d not in ran()]
    report = sweep(h.app)  # its deadline here: the harness's 2 s lease, no busy wait, no republish delay
    assert report.ok, report
    assert all(any(str(d) in x for x in report.not_started) for d in missing), (missing, report)
    assert wait_until(lambda: len(ran()) == len(days), timeout=60), _diag(h, stack, name, days)
    for day in days:  # each date's phase 3 ran once, however many copies arrived
        assert [r["status"] for r in h.app.tracker.runs(processor="summary", day=day)] == ["success"]


def test_cascade_up_after_a_crash_left_a_worker_holding_the_port_stops_it_and_restarts_the_function(
        stack, local_wide, capsys):
    import os
    import signal

    import requests

    from cascade.dev.localstack import _members, _proc_stat

    from .harness import wait_until

    h, name = local_wide
    before = _record(stack, name)
    workers = [pid for pid in _members(before) if pid != before["pid"]]
    assert workers, "functions-framework serves from a worker process of its group"
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)  # a worker that will not go away by itself, holding the port ...
    os.kill(before["pid"], signal.SIGKILL)  # ... after its parent was killed
    assert wait_until(lambda: (_proc_stat(before["pid"]) or ("X",))[0] in ("Z", "X"), timeout=30)
    capsys.readouterr()
    code = _cascade("up")
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "Traceback" not in out.out + out.err
    assert "crashed" in out.out  # it says what it did
    after = _record(stack, name)
    assert after["port"] == before["port"] and after["pid"] != before["pid"]
    for pid in workers:  # what was left of the crashed group is gone
        assert (_proc_stat(pid) or ("X",))[0] in ("Z", "X"), pid
    with requests.Session() as session:
        session.trust_env = False
        assert session.get(f"http://127.0.0.1:{after['port']}/", timeout=10).status_code < 500



def test_cascade_up_names_a_foreign_process_on_a_crashed_functions_port_with_the_next_step_not_a_traceback(
        stack, local_wide, capsys):
    import os
    import signal
    import socket

    from cascade.dev.localstack import _members

    from .harness import wait_until

    h, name = local_wide
    before = _record(stack, name)
    os.killpg(before["pid"], signal.SIGKILL)
    assert wait_until(lambda: not _members(before), timeout=30)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:  # not ours: never signalled
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bound() -> bool:  # the killed server's socket is released by the kernel shortly after
            try:
                squatter.bind(("127.0.0.1", before["port"]))
                return True
            except OSError:
                return False
        assert wait_until(bound, timeout=30), f"port {before['port']} still held after the kill"
        squatter.listen()
        capsys.readouterr()
        code = _cascade("up")
        out = capsys.readouterr()
        assert code == 1, out.out + out.err
        assert "Traceback" not in out.out + out.err
        assert f"127.0.0.1:{before['port']} is already in use by pid {os.getpid()}" in out.err, out.err
        assert "next step" in out.err.lower() and "cascade down" in out.err
    assert _cascade("up") == 0  # once the port is free, up restarts the function there
    assert _record(stack, name)["port"] == before["port"]


def _diag(h, stack, name, days):
    dsub = h.subscriber.subscription_path(h.project, h.pipeline.dead_letter_subscription(3))
    r = h.subscriber.pull(request={"subscription": dsub, "max_messages": 10, "return_immediately": True}, timeout=10)
    log = (stack.state_dir / "logs" / f"{name}.log").read_text()[-6000:]
    return ({str(d): h.app.tracker.partition("summary", d).status for d in days},
            [(m.message.data[:200], dict(m.message.attributes)) for m in r.received_messages], log)
