"""The status page's WSGI application (Werkzeug routing, Jinja2 templates) and its local server.

Routes (all GET, all read-only):

* ``/?start=S&end=E``           the page: the matrix server-rendered, then refreshed live
* ``/api/matrix?start=S&end=E`` what the page polls: every cell's status from ONE batched read
* ``/partition?processor=P&date=D``  the detail of one partition (HTML fragment): state, run
  history, rows, duration, error or blocked reason, recovery commands with copy buttons
* ``/panels?start=S&end=E``     backfills, dead letters / rejected per phase, coverage per table
* ``/static/<file>``            the stylesheet and the script (no build step)

The app holds an ``App`` (emulators or production: the same clients as every command) and never
writes anything. With ``state_dir`` (the local stack's), the page says when the running functions
were started with another definition or code than the local one (``deployed.local_drift``). Dead letters and coverage cost a Pub/Sub pull per phase and a BigQuery query per
table, so they are cached for ``slow_ttl`` seconds; the matrix and the backfills are read fresh.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cascade.definition.calendar import parse_date
from cascade.errors import UnknownProcessorError
from cascade.runtime.app import App
from cascade.state.freshness import Freshness
from cascade.state.status import Status
from cascade.state.tracker import Partition
from cascade.ui import matrix as mx
from cascade.ui import panels

_HERE = Path(__file__).resolve().parent
# Files served under /static/ (name -> content type); nothing else on disk is reachable.
_STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
# The statuses of the legend, in the order the page lists them.
_STATUS_ORDER = (Status.SUCCESS, Status.STALE, Status.RUNNING, Status.WAITING, Status.BLOCKED, Status.FAILED,
                 Status.MISSING, Status.SKIPPED)


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = _when
    env.filters["short"] = _short
    env.filters["bq_cost"] = _bq_cost
    return env


def _bq_cost(cost: Any) -> str:
    """A run's recorded BigQuery cost (``cost`` of a partition or run record), or "-" when none."""
    from cascade.runtime.cost import JobCost

    return JobCost.from_dict(cost).render() if cost else "-"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return "" if value is None else str(value)


def _short(value: Any) -> str:
    return value.strftime("%m-%d %H:%M:%S") if isinstance(value, datetime) else _when(value)


def render_matrix(env: Environment, matrix: mx.Matrix) -> str:
    """The matrix table alone (what the speed figure in docs/status-page.md measures)."""
    return env.get_template("_matrix.html").render(m=matrix)


class _TTLCache:
    """Values kept ``ttl`` seconds per key (slow panels), safe across the server's threads."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._values.get(key)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
        value = compute()
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value


@dataclass
class StatusPage:
    """The WSGI application. ``start``/``end`` are the range shown when the URL names none."""

    app: App
    start: date | None = None
    end: date | None = None
    refresh_s: float = 5.0
    slow_ttl: float = 30.0
    env: Environment = field(default_factory=environment)
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        self._slow = _TTLCache(self.slow_ttl)
        self.urls = Map([
            Rule("/", endpoint="page"),
            Rule("/api/matrix", endpoint="api_matrix"),
            Rule("/partition", endpoint="partition"),
            Rule("/panels", endpoint="panels"),
            Rule("/static/<name>", endpoint="static"),
        ])

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        request = Request(environ)
        adapter = self.urls.bind_to_environ(environ)
        try:
            endpoint, values = adapter.match(method="GET")
            response = getattr(self, f"_{endpoint}")(request, **values)
        except HTTPException as exc:
            response = exc.get_response(environ)
        except _BadRequest as exc:
            response = self._error(request, 400, str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. Firestore unreachable: say so, keep serving
            response = self._error(request, 503, f"{type(exc).__name__}: {exc}")
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)

    def _error(self, request: Request, code: int, message: str) -> Response:
        if request.path.startswith("/api/"):
            return Response(json.dumps({"error": message}), code, mimetype="application/json")
        html = self.env.get_template("_error.html").render(message=message, full=request.path == "/")
        return Response(html, code, mimetype="text/html")

    # ------------------------------------------------------------------ reads
    def _range(self, request: Request) -> tuple[date, date]:
        explicit = request.args.get("start") or request.args.get("end") or (self.start and self.end)
        latest = None if explicit else self.app.tracker.latest_data_date()
        default_start, default_end = mx.default_range(self.app.pipeline, self.app.clock(), latest=latest)
        try:
            start = parse_date(request.args["start"]) if request.args.get("start") else self.start or default_start
            end = parse_date(request.args["end"]) if request.args.get("end") else self.end or default_end
        except ValueError as exc:
            raise _BadRequest(f"not a date (YYYY-MM-DD): {exc}") from exc
        try:
            mx.check_range(start, end)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        return start, end

    def matrix(self, start: date, end: date) -> mx.Matrix:
        """ONE batched Firestore read (every processor x every date of the range, widened back by the
        longest lookback so that staleness sees the inputs the shown partitions read) and one query of
        the range's trigger claims (a phase triggered but not started), then pure code."""
        pipeline = self.app.pipeline
        names = [p.name for p in pipeline.processors]
        first = min([start, *(p.window(start, pipeline.calendar)[0] for p in pipeline.processors)])
        days = [start.fromordinal(o) for o in range(first.toordinal(), end.toordinal() + 1)]
        states = self.app.tracker.partitions(names, days)
        shown = {k: v for k, v in states.items() if k[1] >= start.isoformat()}
        return mx.build_matrix(pipeline, shown, start, end, self.app.clock(), stale=self._stale(states, load=False),
                               claims=self.app.tracker.claims_between(start, end))

    def _stale(self, states: dict, load: bool = True) -> dict:
        """The stale partitions among ``states``; with ``load`` the inputs they recorded are read in
        batches as needed, else only ``states`` are consulted (the matrix's one read)."""
        fresh = Freshness(self.app.pipeline, dict(states), load=self.app.tracker.partitions_by_keys if load else None,
                          versions=self.app.versions)
        return fresh.evaluate([k for k, st in states.items() if st.status == Status.SUCCESS])

    def deployed(self) -> Any:
        """The drift of the local stack's running functions from the local definition (None: none)."""
        if self.state_dir is None:
            return None
        from cascade.dev.deployed import local_drift

        return local_drift(self.app.pipeline, self.state_dir)

    # ------------------------------------------------------------------ endpoints
    def _page(self, request: Request) -> Response:
        start, end = self._range(request)
        m = self.matrix(start, end)
        html = self.env.get_template("page.html").render(
            m=m, pipeline=self.app.pipeline, project=self.app.project, refresh_ms=int(self.refresh_s * 1000),
            statuses=_STATUS_ORDER, generated_at=self.app.clock(),
            glyphs_json=json.dumps({str(k): v for k, v in mx.GLYPHS.items()}),
            matrix_html=render_matrix(self.env, m), deployed=self.deployed())
        return Response(html, mimetype="text/html")

    def _api_matrix(self, request: Request) -> Response:
        start, end = self._range(request)
        data = self.matrix(start, end).states()
        data["generated_at"] = self.app.clock().isoformat()
        return Response(json.dumps(data), mimetype="application/json")

    def _partition(self, request: Request) -> Response:
        name = request.args.get("processor", "")
        try:
            proc = self.app.pipeline.processor(name)
            day = parse_date(request.args.get("date", ""))
        except UnknownProcessorError as exc:
            raise _BadRequest(exc.message) from exc
        except ValueError as exc:
            raise _BadRequest(f"not a date (YYYY-MM-DD): {exc}") from exc
        now = self.app.clock()
        part: Partition = self.app.tracker.partition(name, day)
        stale = self._stale({(name, day.isoformat()): part}).get((name, day.isoformat()))
        runs = self.app.tracker.runs(processor=name, day=day, limit=50)
        step = ""
        if part.status in (Status.FAILED, Status.BLOCKED) or stale is not None:  # as `cascade status` says it
            from cascade.backfill.reach import cover_for
            from cascade.runtime.recovery import partition_next_step

            step = partition_next_step(self.app.pipeline, self.app.tracker, self.app.project, part,
                                       getattr(stale, "reason", stale), cover_for(self.app))
        cal = self.app.pipeline.calendar
        html = self.env.get_template("_detail.html").render(
            p=part, proc=proc, phase=self.app.pipeline.phase(proc.phase), runs=runs,
            expected=cal.is_expected(day), no_game=cal.reason_not_expected(day),
            lease_alive=part.lease_alive(now), commands=mx.recovery_commands(self.app.pipeline, part, now, stale, step),
            stale=stale,
            checks=(part.raw.get("checks") or {}).get("results") or [])
        return Response(html, mimetype="text/html")

    def _panels(self, request: Request) -> Response:
        start, end = self._range(request)
        html = self.env.get_template("_panels.html").render(
            backfills=panels.active_backfills(self.app),
            messages=self._slow.get("messages", lambda: panels.message_counts(self.app)),
            coverage=self._slow.get(("coverage", start, end), lambda: panels.table_coverage(self.app, start, end)),
            start=start, end=end, slow_ttl=int(self.slow_ttl), peek=panels.DLQ_PEEK)
        return Response(html, mimetype="text/html")

    def _static(self, request: Request, name: str) -> Response:
        if name not in _STATIC:
            raise NotFound()
        return Response((_HERE / "static" / name).read_bytes(), content_type=_STATIC[name])


class _BadRequest(Exception):
    """A request the page cannot answer (bad date, range too wide, unknown processor): HTTP 400."""


def serve(page: StatusPage, host: str = "127.0.0.1", port: int = 8765,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``page`` until interrupted (threaded: a poll never waits behind a slow panel)."""
    server = make_server(host, port, page, threaded=True)
    if on_ready is not None:
        on_ready(f"http://{host}:{server.server_port}/")
    try:
        server.serve_forever()
    finally:
        server.server_close()
