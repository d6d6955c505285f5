"""The status page (`cascade ui`): the matrix from in-memory state, then a real cascade in a real browser.

The browser tests drive Debian's headless Chromium through Selenium and /usr/bin/chromedriver
against a namespaced cascade on the emulators: phases 2-3 ran for a few dates (success), phase 2
failed on 2025-02-21 so strict mode blocked phase 3's ``player_rolling_form`` on 2025-02-22
(scenario C of test_checks.py), and the range 2025-02-12..2025-02-22 holds the All-Star break
(2025-02-14..19, no games). A screenshot is saved to .cascade/ui-screenshot.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from datetime import date, datetime, timedelta, timezone

import pytest
from werkzeug.serving import make_server
from werkzeug.test import Client

from cascade.backfill.lease import BackfillLease
from cascade.definition.loading import load
from cascade.ops.date_status import date_status
from cascade.state.tracker import Partition
from cascade.ui import matrix as mx
from cascade.ui.server import StatusPage, environment, render_matrix

from .harness import ROOT, Harness, env_for, new_namespace, printed_commands

START, END = date(2025, 2, 12), date(2025, 2, 22)
D, YESTERDAY = date(2025, 2, 22), date(2025, 2, 21)
NO_GAME = date(2025, 2, 16)  # All-Star break
HISTORY = [date(2025, 2, 12), date(2025, 2, 13), date(2025, 2, 20)]
NOW = datetime(2025, 2, 23, 12, tzinfo=timezone.utc)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver (as root; `make prereqs` prints the same)"


# ---------------------------------------------------------------------------------------- in memory

def test_a_season_of_180_dates_by_9_processors_renders_one_cell_per_partition():
    pipeline = load()
    names = [p.name for p in pipeline.processors][:9]
    start = date(2024, 10, 22)
    days = [start + timedelta(days=i) for i in range(180)]
    cycle = ["success", "failed", "blocked", "running", "waiting", "missing"]
    states = {(n, d.isoformat()): Partition(n, d.isoformat(), status=cycle[(i + j) % len(cycle)], record_count=10)
              for i, n in enumerate(names) for j, d in enumerate(days)}
    m = mx.build_matrix(pipeline, states, days[0], days[-1], NOW, processors=names)
    html = render_matrix(environment(), m)
    assert m.cells == 180 * 9 and html.count('<td class="cell ') == 180 * 9
    assert [r.day for r in m.rows][:2] == [days[-1].isoformat(), days[-2].isoformat()]  # newest first
    no_game_days = [d for d in days if not pipeline.calendar.is_expected(d)]
    assert no_game_days  # Election Day, Thanksgiving, Christmas Eve, the All-Star break ...
    greyed = [r for r in m.rows if not r.expected]
    assert [r.day for r in greyed] == sorted((d.isoformat() for d in no_game_days), reverse=True)
    # A no-game day shows what is stored, greyed only where nothing ran.
    assert sum(c.status == "missing" for r in greyed for c in r.cells) == html.count("s-missing nogame")
    assert sum(m.counts.values()) == 9 * (180 - len(no_game_days))


def test_a_missing_partition_on_a_no_game_day_is_greyed_with_its_reason():
    pipeline = load()
    m = mx.build_matrix(pipeline, {}, NO_GAME, NO_GAME, NOW)
    (row,) = m.rows
    assert not row.expected and row.note == "All-Star break"
    assert all(c.css == "s-missing nogame" and "no data expected: All-Star break" in c.title for c in row.cells)
    assert mx.recovery_commands(pipeline, Partition("nbac_schedule", NO_GAME.isoformat()), NOW) == []


@pytest.mark.parametrize("part, commands", [
    (Partition("player_rolling_form", "2025-02-22", status="failed", error="boom"),
     ["cascade trigger --date 2025-02-22 --phase 3 --processor player_rolling_form"]),
    (Partition("nbac_schedule", "2025-02-21"), ["cascade trigger --date 2025-02-21 --phase 2 --processor nbac_schedule"]),
    (Partition("player_rolling_form", "2025-02-22", status="blocked", blocked={
        "resolution": "fix nbac_player_boxscore and re-run it: cascade trigger --date 2025-02-21 --phase 2 "
                      "--processor nbac_player_boxscore --skip-downstream-trigger; then re-trigger: "
                      "cascade trigger --date 2025-02-22 --phase 3"}),
     ["cascade trigger --date 2025-02-21 --phase 2 --processor nbac_player_boxscore --skip-downstream-trigger",
      "cascade trigger --date 2025-02-22 --phase 3"]),
    (Partition("player_rolling_form", "2025-02-22", status="running", lease_expires_at=NOW + timedelta(minutes=1)),
     ["cascade wait --date 2025-02-22 --phase 3"]),
    (Partition("player_rolling_form", "2025-02-22", status="running", lease_expires_at=NOW - timedelta(minutes=1)),
     ["cascade sweep"]),
    (Partition("player_rolling_form", "2025-02-22", status="success"), []),
], ids=["failed", "missing-on-a-game-day", "blocked-gives-its-resolution-commands", "running", "crashed", "success"])
def test_each_state_names_its_exact_recovery_command(part, commands):
    assert mx.recovery_commands(load(), part, NOW) == commands


def test_a_stale_partition_is_rebuilt_by_the_intent_trigger():
    from cascade.state.freshness import Staleness

    part = Partition("player_rolling_form", "2025-02-22", status="success")
    why = Staleness(("player_rolling_form", "2025-02-22"), ("code changed: sql",), ("sql",))
    assert mx.recovery_commands(load(), part, NOW, why) == [
        "cascade trigger --date 2025-02-22 --phase 3 --processor player_rolling_form"]


def test_a_range_the_page_cannot_show_is_refused_with_the_exact_problem():
    with pytest.raises(ValueError, match="end 2025-02-01 is before start 2025-02-22"):
        mx.check_range(D, date(2025, 2, 1))
    with pytest.raises(ValueError, match="is 367 days; one page shows at most 366"):
        mx.check_range(date(2024, 1, 1), date(2025, 1, 1))


def test_the_cloud_functions_never_import_the_status_page():
    code = ("import sys, cascade.runtime.entry, cascade.ops.sweeper, cascade.runtime.app; "
            "print(sorted(m for m in sys.modules if m.startswith('cascade.ui')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    importers = [str(f.relative_to(ROOT)) for f in (ROOT / "shared").rglob("*.py")
                 if "ui" not in f.relative_to(ROOT / "shared").parts[:1] and f.name != "ui_cmds.py"
                 and ("from ..ui" in f.read_text() or "cascade.ui" in f.read_text() or "from .ui" in f.read_text())]
    assert importers == []


# ---------------------------------------------------------------------------------------- a real cascade

@pytest.fixture(scope="module")
def cascade(endpoints, short_lookback) -> Harness:
    """Phases 2-3 done for the history, phase 2 failed on 02-21, phase 3 blocked on 02-22, one rejected message."""
    h = Harness(endpoints, new_namespace(), pipeline_file=str(short_lookback)).provision()
    for day in HISTORY:
        h.write_raw(day, day)
        for phase in (2, 3):
            h.deliver_until_done(h.trigger(day, phase=phase, mode="backfill", skip_downstream_trigger=True))
    assert h.deliver(h.trigger(YESTERDAY, skip_downstream_trigger=True)).outcomes[0].status == "failed"  # no files
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    by = {o.processor: o.status for o in h.deliver(h.trigger(D, phase=3)).outcomes}
    assert by["player_rolling_form"] == "blocked"
    h.deliver(b"not json", phase=2)  # rejected, recorded
    return h


@pytest.fixture()
def page(cascade):
    return StatusPage(cascade.app, start=START, end=END, refresh_s=1.0, slow_ttl=1.0)


def test_a_poll_is_one_batched_partition_read_and_one_claims_query_and_reports_what_cascade_status_reports(
        cascade, page):
    client = Client(page)
    ops = cascade.app.tracker.ops
    resp = client.get(f"/api/matrix?start={START}&end={END}")
    # the partitions of the range in one batched read, its trigger claims ("triggered, not started") in one query
    assert resp.status_code == 200 and cascade.app.tracker.ops - ops == 2
    data = resp.get_json()
    for day in [START + timedelta(days=i) for i in range((END - START).days + 1)]:
        st = date_status(cascade.app, day)
        for n, ph in st["phases"].items():
            assert data["phases"][f"{n}|{day}"] == ph["status"]
            for name, p in ph["processors"].items():
                assert data["cells"][f"{name}|{day}"] == p["status"], (name, day)
    assert data["cells"][f"player_rolling_form|{D}"] == "blocked"


def test_the_page_refuses_a_bad_range_and_an_unknown_processor_precisely(page):
    client = Client(page)
    resp = client.get("/api/matrix?start=2025-02-22&end=2025-02-01")
    assert resp.status_code == 400 and resp.get_json() == {"error": "end 2025-02-01 is before start 2025-02-22"}
    resp = client.get("/?start=2025-02-30")
    assert resp.status_code == 400 and "not a date" in resp.get_data(as_text=True)
    resp = client.get("/partition?processor=nope&date=2025-02-22")
    assert resp.status_code == 400 and "nope" in resp.get_data(as_text=True)
    assert client.get("/static/../server.py").status_code == 404


def test_cascade_ui_serves_the_page_on_loopback_and_prints_its_address_as_json(cascade, endpoints, short_lookback):
    env = {**env_for(endpoints), "CASCADE_NAMESPACE": cascade.namespace, "CASCADE_PIPELINE_FILE": str(short_lookback),
           "CASCADE_STATE_DIR": tempfile.mkdtemp()}
    proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "ui", "--port", "0", "--json",
                             "--start", str(START), "--end", str(END)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:") and info["start"] == str(START)
        with urllib.request.urlopen(info["url"], timeout=30) as resp:
            html = resp.read().decode()
        assert resp.status == 200 and f'data-key="player_rolling_form|{D}" data-status="blocked"' in html
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------- in a browser

@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"Chromium is not installed (need {CHROMIUM} and {CHROMEDRIVER}): {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cascade-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1300", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def served(page):
    server = make_server("127.0.0.1", 0, page, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


_READ_CELLS = """return Array.from(document.querySelectorAll('#matrix td[data-key]')).map(td => [
  td.dataset.key, td.classList.contains('roll') ? 'phase' : 'cell', td.dataset.status || td.dataset.state,
  td.classList.contains('nogame'), getComputedStyle(td).backgroundImage, getComputedStyle(td).backgroundColor]);"""


def test_the_matrix_in_chromium_shows_date_status_greys_no_game_days_and_opens_a_blocked_cell(
        browser, cascade, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(f"{served}/?start={START}&end={END}")
    wait.until(ec.presence_of_element_located((By.ID, "matrix")))
    rows = browser.execute_script(_READ_CELLS)
    cells = {key: (status, nogame, image, colour) for key, kind, status, nogame, image, colour in rows if kind == "cell"}
    phases = {key: status for key, kind, status, *_ in rows if kind == "phase"}
    assert len(cells) == 11 * len(cascade.pipeline.processors)

    # 1. Every cell and every phase roll-up is what `cascade status` (date_status) reports.
    seen = set()
    for day in [START + timedelta(days=i) for i in range((END - START).days + 1)]:
        st = date_status(cascade.app, day)
        for n, ph in st["phases"].items():
            assert phases[f"{n}|{day}"] == ph["status"], (n, day)
            for name, p in ph["processors"].items():
                assert cells[f"{name}|{day}"][0] == p["status"], (name, day)
                seen.add(p["status"])
    assert {"success", "failed", "blocked", "missing"} <= seen

    # 2. A no-game day is greyed (striped grey), its reason beside the date; a missing game day is not.
    for name in (p.name for p in cascade.pipeline.processors):
        status, nogame, image, _ = cells[f"{name}|{NO_GAME}"]
        assert status == "missing" and nogame and "repeating-linear-gradient" in image
    _, nogame, image, colour = cells[f"player_game_summary|{YESTERDAY}"]  # never ran on a game day
    assert not nogame and "gradient" not in image and colour == "rgb(255, 255, 255)"
    date_cell = browser.find_element(By.XPATH, f"//th[@class='date'][starts-with(normalize-space(.), '{NO_GAME}')]")
    assert "All-Star break" in date_cell.text

    # 3. A failed cell opens its error and the trigger that re-runs it.
    browser.find_element(By.CSS_SELECTOR, f'td[data-key="nbac_player_boxscore|{YESTERDAY}"]').click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".detail-head"), str(YESTERDAY)))
    commands = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#detail-recovery code.command")]
    assert commands == [f"cascade trigger --date {YESTERDAY} --phase 2 --processor nbac_player_boxscore"]
    assert browser.find_element(By.ID, "detail-runs").find_elements(By.CSS_SELECTOR, "tbody tr")

    # 4. The blocked cell shows its reason and the exact recovery commands, with a working copy button.
    browser.find_element(By.CSS_SELECTOR, f'td[data-key="player_rolling_form|{D}"]').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "detail-status"), "blocked"))
    reason = browser.find_element(By.ID, "detail-reason").text
    assert "blocked: Upstream Failure" in reason and "nbac_player_boxscore" in reason and str(YESTERDAY) in reason
    commands = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#detail-recovery code.command")]
    # What `cascade status` prints for it: the root cause (the raw file), then one backfill that reaches
    # every input it needs (the history before 02-12 was never loaded: the window of 02-21 reads it).
    from cascade.backfill.reach import cover_for

    step = date_status(cascade.app, D, cover=cover_for(cascade.app))["phases"]["3"]["processors"][
        "player_rolling_form"]["next_step"]
    assert commands == printed_commands(step) and len(commands) == 1, step
    assert commands[0].startswith("cascade backfill --start ") and commands[0].endswith(f"--end {D} --phase 2 --phase 3")
    assert date.fromisoformat(commands[0].split()[3]) < YESTERDAY  # it starts before the blocked range
    copy = browser.find_element(By.CSS_SELECTOR, "#detail-recovery button.copy")
    copy.click()
    wait.until(lambda _: copy.text == "copied")

    # 5. Backfills, dead letters / rejected per phase and coverage per table.
    lease = BackfillLease(cascade.app, ["player_composite_factors"], START, END, ttl_seconds=60,
                          command=f"cascade backfill --start {START} --end {END} --processor player_composite_factors")
    with lease:
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#panel-backfills tbody tr"))
        row = browser.find_element(By.CSS_SELECTOR, "#panel-backfills tbody tr")
        assert f"{START}..{END}" in row.text and "1 processors" in row.text
        tds = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert tds[3:6] == ["0", "0", "5"]  # done, failed, remaining: phase 4 never ran on the 5 game days
    tds = [td.text for td in browser.find_elements(By.CSS_SELECTOR, '#panel-messages tr[data-phase="2"] td')]
    assert tds[1:3] == ["0", "1"] and "cascade rejected" in tds[3]  # no dead letters, one rejected message
    coverage = browser.find_elements(By.CSS_SELECTOR, "#panel-coverage tbody tr")
    assert len(coverage) == len(cascade.pipeline.processors)

    browser.find_element(By.CSS_SELECTOR, f'td[data-key="player_rolling_form|{D}"]').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "detail-status"), "blocked"))
    shot = ROOT / ".cascade" / "ui-screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1600, min(height + 160, 2400))  # the whole page: matrix, detail and panels
    assert browser.save_screenshot(str(shot))

    # 6. Live: phase 2 re-run for 02-21 turns its cells green without a reload.
    cascade.write_raw(YESTERDAY, YESTERDAY)
    cascade.deliver(cascade.trigger(YESTERDAY, skip_downstream_trigger=True))
    key = f"nbac_player_boxscore|{YESTERDAY}"
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(
        f"return document.querySelector('td[data-key=\"{key}\"]').dataset.status") == "success")
    assert browser.find_element(By.ID, "refresh-state").get_attribute("data-ok") == "1"
    assert date_status(cascade.app, YESTERDAY)["phases"]["2"]["status"] == "complete"


def test_the_default_range_opens_on_the_pipelines_data_when_it_is_older_than_a_month():
    pipeline = load()
    now = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    assert mx.default_range(pipeline, now, latest=date(2025, 2, 22)) == (date(2025, 1, 24), date(2025, 2, 22))
    assert mx.default_range(pipeline, now, latest=date(2026, 12, 1))[1] == date(2026, 12, 2)
    assert mx.default_range(pipeline, now)[1] == date(2026, 12, 2)


def test_a_page_started_without_a_range_opens_on_the_newest_date_with_data(cascade):
    assert cascade.app.tracker.latest_data_date() == D
    client = Client(StatusPage(cascade.app, refresh_s=1.0, slow_ttl=1.0))
    html = client.get("/").get_data(as_text=True)
    assert D.isoformat() in html and (D - timedelta(days=29)).isoformat() in html
