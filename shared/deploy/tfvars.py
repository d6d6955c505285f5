"""Owns the Terraform inputs derived from the pipeline definition.

``terraform_inputs(pipeline)`` turns a ``Pipeline`` into plain JSON data that the Terraform root
module under ``infra/terraform`` reads as ``var.pipeline``: one entry per phase (function, topics,
subscriptions, service-account ids, datasets it writes and reads, schedule), every output table
(schema, partitioning column, clustering) and the bucket names. Terraform declares nothing
per-phase by hand: adding a phase to the YAML and regenerating this file is the whole change.

Regenerate (and commit) after any change of the definition::

    python -m cascade.deploy.tfvars --write        # writes infra/terraform/pipeline.auto.tfvars.json
    python -m cascade.deploy.tfvars > some.json    # or print it

``python -m cascade.deploy.tfvars --check`` exits 1 when the committed file is stale.

Names that contain the project id carry ``project_placeholder`` (default ``${project}``) instead;
Terraform substitutes ``var.project_id`` (tfvars JSON values are literals, not templates).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from cascade.definition.columns import all_columns, type_to_legacy
from cascade.definition.loading import load
from cascade.definition.model import Pipeline
from cascade.definition.placeholders import tables_in
from cascade.deploy.bundle import GENERIC_FUNCTION_DIR, REPO_ROOT, runtime_files, runtime_requirements

TFVARS_PATH = REPO_ROOT / "infra" / "terraform" / "pipeline.auto.tfvars.json"

_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_MAX_CLUSTERING = 4  # BigQuery allows at most four clustering columns.

# Cloud Run (functions gen2) serves more than one request per instance only with at least 1 vCPU.
_CPU_CONCURRENT = "1"
_CPU_SINGLE = "0.5"
# A daily cron "M H * * *" (minute, hour): the only schedules a wall-clock freshness objective fits.
_DAILY_CRON = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# Freshness: a phase must be complete this long after its chain's schedule unless the definition
# says otherwise (``complete_by: "HH:MM"``, pipeline time zone).
DEFAULT_COMPLETE_AFTER_MINUTES = 120
# How long the deadline tick of a freshness objective stays "on" (see infra/terraform/monitoring.tf):
# the completion window is (complete_by - schedule) + this, so any evaluation during the tick sees
# the whole day's window. Completion windows stay below Cloud Monitoring's 23.5 h limit.
DEADLINE_TICK_SECONDS = 1800
_MAX_WINDOW_SECONDS = 23 * 3600 + 1800


def _account_id(*parts: str) -> str:
    """A service-account id (6-30 chars, ``[a-z][a-z0-9-]*``) from name parts, hash-shortened if long."""
    raw = "-".join(p for p in parts if p).replace("_", "-").lower()
    if len(raw) > 30:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:6]
        raw = f"{raw[:23].rstrip('-')}-{digest}"
    if len(raw) < 6:
        raw = f"{raw}-sa"
    if not _ACCOUNT_ID.match(raw):
        raise ValueError(f"cannot derive a valid service account id from {parts!r} (got {raw!r})")
    return raw


def _resource_name(pipeline: Pipeline, *parts: str) -> str:
    """A Cloud Run/Functions-safe name (lowercase, hyphens) carrying the namespace prefix."""
    prefix = [pipeline.namespace] if pipeline.namespace else []
    name = "-".join([*prefix, pipeline.name, *parts]).replace("_", "-").lower()
    if len(name) > 63 or not re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", name):
        raise ValueError(f"derived resource name {name!r} is not a valid Cloud Functions name")
    return name


def definition_modules(pipeline: Pipeline, definition_file: str) -> list[str]:
    """The pipeline's own Python modules its functions import (``python: module:attr`` processors),
    as files beside the definition - packaged with it, so a deployed Python processor imports
    exactly what ran locally. A module that is not there is an error naming processor and file."""
    folder = Path(definition_file).parent
    out = set()
    for proc in pipeline.processors:
        if not proc.python:
            continue
        module = proc.python.split(":", 1)[0]
        parts = module.split(".")
        for cand in ((folder.joinpath(*parts)).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
            if (REPO_ROOT / cand).is_file():
                out.add(cand.as_posix())
                # the packages on the way are part of it too
                for i in range(1, len(parts)):
                    init = folder.joinpath(*parts[:i], "__init__.py")
                    if (REPO_ROOT / init).is_file():
                        out.add(init.as_posix())
                break
        else:
            raise SystemExit(f"processor {proc.name}: module {module!r} of `python: {proc.python}` is not a file "
                             f"beside the definition ({folder}/{'/'.join(parts)}.py): put it there so the function "
                             f"zip carries it")
    return sorted(out)


def _table_inputs(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for proc in pipeline.processors:
        t = proc.output
        dataset = pipeline.dataset_id(t.dataset)
        required = set(t.merge_keys)
        tables[f"{dataset}.{t.name}"] = {
            "dataset": dataset,
            "table": t.name,
            "processor": proc.name,
            "phase": proc.phase,
            "date_column": t.date_column,
            "keys": list(t.keys),
            "clustering": [k for k in t.keys if k != t.date_column][:_MAX_CLUSTERING],
            "schema": [  # legacy type names, as the tables API reports them back (no perpetual INT64/INTEGER diff)
                {"name": c, "type": type_to_legacy(ty), "mode": "REQUIRED" if c in required else "NULLABLE"}
                for c, ty in all_columns(t)
            ],
        }
    return dict(sorted(tables.items()))


def _services(pipeline: Pipeline) -> list[str]:
    """Cloud Run service names of every function of the pipeline (phases and the sweeper)."""
    return [_resource_name(pipeline, pipeline.function_name(ph.number)) for ph in pipeline.phases] + [
        _resource_name(pipeline, "sweeper")]


def _or(values: list[str]) -> str:
    """A Cloud Logging ``(\"a\" OR \"b\")`` value list."""
    return "(" + " OR ".join(json.dumps(v) for v in values) + ")"


def metric_prefix(pipeline: Pipeline) -> str:
    """Prefix of the pipeline's log-based metric names, e.g. ``cascade/nba`` (``cascade/dev-nba``)."""
    return f"cascade/{pipeline._prefix()}{pipeline.name}"


def alert_log_filter(pipeline: Pipeline) -> str:
    """The Cloud Logging filter of Cascade's alert entries (``cascade.runtime.alerts.LogAlertSink``).

    An alert is one structured line on the function's stdout: ``severity`` ERROR, ``alert: true``
    (a jsonPayload field) and the ``logging.googleapis.com/labels`` pipeline/phase/processor/date
    (entry labels). The filter names exactly those, on the pipeline's own Cloud Run services.
    """
    return "\n".join([
        'resource.type="cloud_run_revision"',
        f"resource.labels.service_name={_or(_services(pipeline))}",
        "severity=ERROR",
        "jsonPayload.alert=true",
        f"labels.pipeline={json.dumps(pipeline.name)}",
    ])


def _daily_start(schedule: str | None) -> int | None:
    """Minutes after midnight of a daily cron ``"M H * * *"``; None for any other schedule."""
    m = _DAILY_CRON.match(schedule or "")
    if not m or int(m.group(1)) > 59 or int(m.group(2)) > 23:
        return None
    return int(m.group(2)) * 60 + int(m.group(1))


def _chain_root(pipeline: Pipeline, number: int) -> list[int] | None:
    """The phases from the scheduled phase whose daily run reaches ``number``, to ``number`` itself.

    Phase 4 of the reference pipeline: [2, 3, 4] (2 is scheduled, cascades to 3, then 4). None when
    no scheduled phase leads to it, or when several phases cascade into one on the way (ambiguous).
    """
    chain = [number]
    while pipeline.phase(chain[0]).schedule is None:
        preds = [p.number for p in pipeline.phases if p.next == chain[0]]
        if len(preds) != 1 or preds[0] in chain:
            return None
        chain.insert(0, preds[0])
    return chain


def _hh_mm(minutes: int) -> str:
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def freshness(pipeline: Pipeline, number: int) -> dict[str, Any] | None:
    """The freshness objective of a phase: "its daily run is complete by HH:MM" (pipeline time zone).

    The deadline is the phase's ``complete_by`` when the definition has one, else the schedule of the
    phase's chain plus ``DEFAULT_COMPLETE_AFTER_MINUTES``: phase 4 of the reference pipeline (chain
    2 -> 3 -> 4, scheduled "0 6 * * *") must have finished yesterday's date by 08:00. A day the
    calendar expects no data on counts as done when any phase of the chain logs its ``skipped: no
    data expected`` line (nothing cascades then). None for phases no daily schedule reaches.
    """
    chain = _chain_root(pipeline, number)
    if chain is None:
        return None
    root = pipeline.phase(chain[0])
    start = _daily_start(root.schedule)
    explicit = getattr(pipeline.phase(number), "complete_by", None)
    if start is None:
        if explicit:
            raise ValueError(f"phase {number}: complete_by needs a daily schedule 'M H * * *' on phase {root.number}")
        return None
    if explicit:
        m = _HH_MM.match(str(explicit))
        if not m:
            raise ValueError(f"phase {number}: complete_by {explicit!r} is not HH:MM")
        deadline = int(m.group(1)) * 60 + int(m.group(2))
    else:
        deadline = start + DEFAULT_COMPLETE_AFTER_MINUTES
    after = (deadline - start) % (24 * 60)
    window = after * 60 + DEADLINE_TICK_SECONDS
    if after == 0 or window > _MAX_WINDOW_SECONDS:
        raise ValueError(f"phase {number}: complete_by {_hh_mm(deadline)} must be after its schedule "
                         f"{_hh_mm(start)} and at most {(_MAX_WINDOW_SECONDS - DEADLINE_TICK_SECONDS) // 60} minutes later")
    services = [_resource_name(pipeline, pipeline.function_name(n)) for n in chain]
    skips = _or([str(n) for n in chain])
    log_filter = "\n".join([
        'resource.type="cloud_run_revision"',
        f"resource.labels.service_name={_or(services)}",
        f"labels.pipeline={json.dumps(pipeline.name)}",
        'labels.mode="daily"',
        f'((labels.phase="{number}" AND jsonPayload.message=~"^phase {number} for [0-9-]+: .*complete=True")'
        f' OR (labels.phase={skips} AND jsonPayload.message=~"^phase [0-9]+ skipped: no data expected on "))',
    ])
    return {
        "complete_by": _hh_mm(deadline),
        "schedule_phase": root.number,
        "starts": _hh_mm(start),
        "chain": chain,
        "deadline_schedule": f"{deadline % 60} {deadline // 60 % 24} * * *",
        "deadline_topic": f"{pipeline.topic(number)}-deadline",
        "tick_seconds": DEADLINE_TICK_SECONDS,
        "window_seconds": window,
        "metric": f"{metric_prefix(pipeline)}/phase{number}_daily_done",
        "log_filter": log_filter,
    }


def _prefix_of(template: str, where: str) -> str:
    """The fixed folder of an object path template: ``exports/predictions/{date}.json`` -> ``exports/predictions/``."""
    fixed = template.split("{", 1)[0]
    folder = fixed[: fixed.rfind("/") + 1]
    if not folder:
        raise ValueError(f"{where}: path {template!r} has no fixed folder before its first placeholder; "
                         "its function could not be limited to a prefix of the bucket")
    return folder


def burst_messages(pipeline: Pipeline) -> int:
    """The burst a phase's push subscription must absorb without dead-lettering a message that
    never ran: every date the calendar expects triggered at once (a replay of the whole history,
    e.g. ``cascade dlq replay`` after an outage or a loop of ``cascade trigger``)."""
    seasons = pipeline.calendar.seasons
    if not seasons:
        return 1
    first, last = min(s.start for s in seasons), max(s.end for s in seasons)
    return max(1, len(pipeline.calendar.expected_dates(first, last)))


def _phase_inputs(pipeline: Pipeline, number: int) -> dict[str, Any]:
    ph = pipeline.phase(number)
    procs = pipeline.processors_of(number)
    writes = sorted({pipeline.dataset_id(p.output.dataset) for p in procs})
    # Read: upstream outputs, plus any table the processors' SQL names (export SQL included).
    read_logical = {pipeline.processor(u.processor).output.dataset for p in procs for u in p.upstreams}
    for p in procs:
        for text in (p.sql, (p.export or {}).get("sql")):
            read_logical |= {t.partition(".")[0] for t in tables_in(text)}
    reads = sorted({pipeline.dataset_id(ds) for ds in read_logical})
    function = pipeline.function_name(number)
    return {
        "number": ph.number,
        "name": ph.name,
        "title": ph.title,
        "function": function,
        "deployed_name": _resource_name(pipeline, function),
        "source_dir": GENERIC_FUNCTION_DIR,  # one entry point for every phase; CASCADE_PHASE says which
        "entry_point": "handle",
        "topic": pipeline.topic(number),
        "dead_letter_topic": pipeline.dead_letter_topic(number),
        "push_subscription": pipeline.push_subscription(number),
        "dead_letter_subscription": pipeline.dead_letter_subscription(number),
        "next": ph.next,
        "next_topic": pipeline.topic(ph.next) if ph.next is not None else None,
        "writes_datasets": writes,
        "reads_datasets": reads,
        "datasets": sorted(set(writes) | set(reads)),
        "tables": sorted(f"{pipeline.dataset_id(p.output.dataset)}.{p.output.name}" for p in procs),
        "processors": [p.name for p in procs],
        "reads_raw_bucket": any(p.source is not None for p in procs),
        "writes_export_bucket": any(p.export is not None for p in procs),
        # The raw files the phase reads (the contract its scraper meets) and the bucket folders it
        # may read / write: its IAM on the bucket is limited to these prefixes.
        "raw_sources": [{"processor": p.name, "path": str(p.source["gcs_json"]),
                         "records": str(p.source.get("records", "records"))} for p in procs if p.source],
        "read_prefixes": sorted({_prefix_of(str(p.source["gcs_json"]), f"processor {p.name}")
                                 for p in procs if p.source}),
        # Exports to the raw bucket; an export with a bucket of its own is in ``export_buckets``.
        "export_prefixes": sorted({_prefix_of(str(p.export["gcs_json"]), f"processor {p.name}")
                                   for p in procs if p.export and not p.export.get("bucket")}),
        "schedule": ph.schedule,
        "default_date": ph.default_date,
        # Scaling: at most max_instances instances, each serving `concurrency` requests at once
        # (Cloud Run needs >= 1 vCPU for concurrency > 1).
        "max_instances": ph.max_instances,
        "concurrency": ph.concurrency,
        "cpu": _CPU_CONCURRENT if ph.concurrency > 1 else _CPU_SINGLE,
        "freshness": freshness(pipeline, number),
        "function_account_id": _account_id(pipeline.namespace, pipeline.name, f"phase{number}"),
        "push_account_id": _account_id(pipeline.namespace, pipeline.name, f"phase{number}", "push"),
    }


def export_buckets(pipeline: Pipeline, project_placeholder: str = "${project}") -> dict[str, Any]:
    """The buckets exports declare of their own (``export.bucket``), keyed by processor: the bucket's
    name and the phase whose function writes there, limited to the export's folder."""
    return {p.name: {"name": pipeline.export_bucket(p, project_placeholder), "phase": str(p.phase),
                     "prefix": _prefix_of(str(p.export["gcs_json"]), f"processor {p.name}")}
            for p in pipeline.processors if p.export is not None and p.export.get("bucket")}


def terraform_inputs(pipeline: Pipeline, project_placeholder: str = "${project}") -> dict[str, Any]:
    """Everything per-phase, per-table and per-bucket Terraform needs, as plain JSON data.

    Phases are keyed by their number as a string (Terraform ``for_each`` keys are strings).
    """
    ns = pipeline.namespace
    definition = Path(pipeline.source_path or "")
    try:
        definition_file = definition.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        definition_file = f"pipelines/{definition.name}"
    return {
        "name": pipeline.name,
        "namespace": ns,
        "description": pipeline.description,
        "definition_file": definition_file,
        "time_zone": pipeline.calendar.timezone,
        "project_placeholder": project_placeholder,
        "raw_bucket": pipeline.bucket(project_placeholder),
        "raw_bucket_suffix": pipeline.bucket(project_placeholder)[len(project_placeholder) + 1:],
        "source_bucket": f"{project_placeholder}-{_resource_name(pipeline, 'functions-source')}",
        "datasets": pipeline.datasets(),
        "runtime_requirements": runtime_requirements(),
        "runtime_files": runtime_files(),
        "definition_modules": definition_modules(pipeline, definition_file),
        "build_account_id": _account_id(ns, pipeline.name, "build"),
        "sweeper": {
            "function": "sweeper",
            "deployed_name": _resource_name(pipeline, "sweeper"),
            "source_dir": "functions/sweeper",
            "entry_point": "handle",
            "function_account_id": _account_id(ns, pipeline.name, "sweeper"),
            "invoker_account_id": _account_id(ns, pipeline.name, "sweeper", "invoker"),
        },
        "phases": {str(ph.number): _phase_inputs(pipeline, ph.number) for ph in pipeline.phases},
        "export_buckets": export_buckets(pipeline, project_placeholder),
        "tables": _table_inputs(pipeline),
        "burst_messages": burst_messages(pipeline),
        "monitoring": {
            "metric_prefix": metric_prefix(pipeline),
            "alert_metric": f"{metric_prefix(pipeline)}/alerts",
            "alert_log_filter": alert_log_filter(pipeline),
            "services": _services(pipeline),
        },
    }


def render(pipeline: Pipeline | None = None, project_placeholder: str = "${project}") -> str:
    """The tfvars file's text: ``{"pipeline": {...}}``, stable key order, trailing newline."""
    data = {"pipeline": terraform_inputs(pipeline or load(), project_placeholder)}
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.deploy.tfvars", description=__doc__.splitlines()[0])
    parser.add_argument("--definition", help="pipeline YAML (default: $CASCADE_PIPELINE_FILE or pipelines/nba.yaml)")
    parser.add_argument("--namespace", default=None, help="resource-name prefix (default: $CASCADE_NAMESPACE)")
    parser.add_argument("--write", action="store_true", help=f"write {TFVARS_PATH.relative_to(REPO_ROOT)}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    parser.add_argument("--output", type=Path, default=TFVARS_PATH, help="file for --write/--check")
    args = parser.parse_args(argv)
    text = render(load(args.definition, namespace=args.namespace))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `python -m cascade.deploy.tfvars --write`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if args.write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
