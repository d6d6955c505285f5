"""Synthetic Phase 1 output of any pipeline: the raw JSON files its ``gcs_json_load`` sources read.

Derived from the definition, deterministically (seeded by pipeline, file pattern and date): for each
expected date, each distinct ``source.gcs_json`` pattern gets one file ``{"date": ..., <records>:
[...]}`` whose records carry the columns every processor reading that file declares. Key columns
enumerate a domain shared by column name across files (so ``store_id`` joins between two files),
other columns get values of their type. ``source.synthetic`` in the definition shapes them:

.. code-block:: yaml

    source:
      gcs_json: "pos/sales/{date}.json"
      records: lines
      synthetic:
        rows: 12                                   # records per file (default 10, at most the key domain)
        values:
          store_id: [S01, S02, S03]                # choices
          units: {min: 1, max: 40}                 # numbers within bounds

A definition may name its own generator instead (``synthetic: module:attribute``, a callable
``day_files(day) -> {pattern: body}``, e.g. the reference NBA pipeline's realistic box scores):
``day`` is a ``datetime.date`` (only expected dates are asked for), each key is a ``source.gcs_json``
path pattern exactly as declared (``"stations/{date}.json"``, not the rendered path), each body a
dict (serialized as JSON) or a str (written as it is: the JSON text). Patterns it does not return
are derived as above; keys that no source declares are ignored.
"""

from __future__ import annotations

import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Callable

from google.api_core import exceptions as gexc

from cascade.definition.calendar import date_range
from cascade.definition.imports import import_callable
from cascade.definition.loading import load
from cascade.definition.model import Pipeline, Processor

DEFAULT_ROWS = 10


def sources(pipeline: Pipeline) -> dict[str, list[Processor]]:
    """Raw file pattern -> the processors that load it."""
    out: dict[str, list[Processor]] = {}
    for p in pipeline.processors:
        if p.source:
            out.setdefault(str(p.source["gcs_json"]), []).append(p)
    return out


def day_files(day: date, pipeline: Pipeline | None = None) -> dict[str, dict[str, Any]]:
    """The raw files of ``day`` for ``pipeline`` (default: the loaded definition): pattern -> body."""
    pipeline = pipeline or load()
    files: dict[str, dict[str, Any]] = {}
    if pipeline.synthetic:
        files.update(import_callable(pipeline, pipeline.synthetic)(day))
    for pattern, procs in sources(pipeline).items():
        if pattern not in files:
            files[pattern] = derived_file(pipeline, pattern, procs, day)
    return files


def derived_file(pipeline: Pipeline, pattern: str, procs: list[Processor], day: date) -> dict[str, Any]:
    """One raw file derived from the declared columns, keys and ``source.synthetic`` hints."""
    rng = random.Random(f"{pipeline.name}|{pattern}|{day.isoformat()}")
    columns: dict[str, str] = {}
    keys: list[str] = []
    hints: dict[str, Any] = {}
    rows_hint = None
    date_columns = {p.output.date_column for p in procs}
    for p in procs:
        columns.update({c: t for c, t in p.output.columns if c not in date_columns})
        keys += [k for k in p.output.keys if k not in keys and k not in date_columns]
        syn = (p.source or {}).get("synthetic") or {}
        hints.update(syn.get("values") or {})
        rows_hint = syn.get("rows", rows_hint)
    finite = all(isinstance(hints.get(k), list) for k in keys)
    wanted = int(rows_hint or (0 if finite else DEFAULT_ROWS))
    domains = [hints[k] if isinstance(hints.get(k), list) else _key_domain(k, columns[k], wanted or DEFAULT_ROWS)
               for k in keys]
    combos = list(itertools.product(*domains)) if keys else [()] * (wanted or DEFAULT_ROWS)
    if wanted and wanted < len(combos):
        combos = [combos[i] for i in sorted(rng.sample(range(len(combos)), wanted))]
    iso = day.isoformat()
    records = []
    for combo in combos:
        rec: dict[str, Any] = {c: iso for c in date_columns}
        rec.update(zip(keys, combo))
        for col, typ in columns.items():
            if col not in rec:
                rec[col] = _value(rng, col, typ, hints.get(col), day)
        records.append(rec)
    record_key = str((procs[0].source or {}).get("records", "records"))
    return {"date": iso, record_key: records}


def _key_domain(col: str, typ: str, n: int) -> list[Any]:
    if typ in ("INT64", "NUMERIC", "FLOAT64"):
        return list(range(1, n + 1))
    return [f"{col}_{i:03d}" for i in range(1, n + 1)]


def _value(rng: random.Random, col: str, typ: str, hint: Any, day: date) -> Any:
    if isinstance(hint, list):
        return rng.choice(hint)
    low, high = (hint.get("min", 0), hint.get("max", 100)) if isinstance(hint, dict) else (0, 100)
    if typ == "INT64":
        return rng.randint(int(low), int(high))
    if typ in ("FLOAT64", "NUMERIC"):
        return round(rng.uniform(float(low), float(high)), 2)
    if typ == "BOOL":
        return rng.random() < 0.5
    if typ == "DATE":
        return day.isoformat()
    if typ == "TIMESTAMP":
        return f"{day.isoformat()}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    return f"{col} {rng.randint(1, 999)}"


def write_day(pipeline: Pipeline, bucket: Any, day: date, failed_scrapes: set[str] = frozenset()) -> list[str]:
    """Write ``day``'s raw files into ``bucket``; a pattern in ``failed_scrapes`` is removed instead
    (that scraper failed). Returns the paths written. A date the calendar does not expect has no files."""
    if not pipeline.calendar.is_expected(day):
        return []
    patterns = set(sources(pipeline))
    written = []
    for pattern, body in day_files(day, pipeline).items():
        if pattern not in patterns:
            continue
        path = pattern.format(date=day.isoformat())
        if pattern in failed_scrapes:
            try:
                bucket.blob(path).delete()
            except gexc.NotFound:
                pass
            continue
        # A dict is serialized as JSON; a str (or bytes) is written as it is: the JSON text itself.
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        bucket.blob(path).upload_from_string(data, content_type="application/json")
        written.append(path)
    return written


def write_raw_files(pipeline: Pipeline, storage_client: Any, project: str, start: date, end: date,
                    progress: Callable[[str], None] | None = None) -> int:
    """Write the raw files of every expected date from ``start`` to ``end`` (inclusive); returns files written."""
    bucket = storage_client.bucket(pipeline.bucket(project))
    days = pipeline.calendar.expected_dates(start, end)
    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(len(paths) for paths in pool.map(lambda d: write_day(pipeline, bucket, d), days))
    if progress:
        progress(f"wrote {total} raw files for {len(days)} expected dates {start}..{end} "
                 f"({len(list(date_range(start, end))) - len(days)} dates with no data expected skipped)")
    return total
