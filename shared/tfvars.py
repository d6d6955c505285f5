"""Owns the Terraform inputs derived from the pipeline definition.

``terraform_inputs(pipeline)`` turns a ``Pipeline`` into plain JSON data that the Terraform root
module under ``infra/terraform`` reads as ``var.pipeline``: one entry per phase (function, topics,
subscriptions, service-account ids, datasets it writes and reads, schedule), every output table
(schema, partitioning column, clustering) and the bucket names. Terraform declares nothing
per-phase by hand: adding a phase to the YAML and regenerating this file is the whole change.

Regenerate (and commit) after any change of the definition::

    python -m shared.tfvars --write        # writes infra/terraform/pipeline.auto.tfvars.json
    python -m shared.tfvars > some.json    # or print it

``python -m shared.tfvars --check`` exits 1 when the committed file is stale.

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

from .pipeline import _PLACEHOLDER, Pipeline, all_columns, load

REPO_ROOT = Path(__file__).resolve().parent.parent
TFVARS_PATH = REPO_ROOT / "infra" / "terraform" / "pipeline.auto.tfvars.json"
REQUIREMENTS_PATH = REPO_ROOT / "requirements.txt"

# Distributions the deployed functions need at run time; their pins are taken from requirements.txt
# (the single pin list), so the functions run exactly the versions the tests ran.
RUNTIME_PACKAGES = (
    "functions-framework",
    "cloudevents",
    "google-cloud-pubsub",
    "google-cloud-bigquery",
    "google-cloud-firestore",
    "google-cloud-storage",
    "PyYAML",
)

# The definition's column types, as the BigQuery tables API reports them back (so a plan shows no
# perpetual type diff between INT64 and INTEGER).
_BQ_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_MAX_CLUSTERING = 4  # BigQuery allows at most four clustering columns.


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


def runtime_requirements(path: Path = REQUIREMENTS_PATH) -> list[str]:
    """The pinned lines of ``RUNTIME_PACKAGES`` from ``requirements.txt`` (error if one is missing)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
        pins[name.lower().replace("_", "-")] = line
    missing = [p for p in RUNTIME_PACKAGES if p.lower() not in pins]
    if missing:
        raise ValueError(f"{path} pins none of the runtime packages {missing}")
    return [pins[p.lower()] for p in RUNTIME_PACKAGES]


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
            "schema": [
                {"name": c, "type": _BQ_TYPES.get(ty, ty), "mode": "REQUIRED" if c in required else "NULLABLE"}
                for c, ty in all_columns(t)
            ],
        }
    return dict(sorted(tables.items()))


def _phase_inputs(pipeline: Pipeline, number: int) -> dict[str, Any]:
    ph = pipeline.phase(number)
    procs = pipeline.processors_of(number)
    writes = sorted({pipeline.dataset_id(p.output.dataset) for p in procs})
    # Read: upstream outputs, plus any table the processors' SQL names (export SQL included).
    read_logical = {pipeline.processor(u.processor).output.dataset for p in procs for u in p.upstreams}
    for p in procs:
        for text in (p.sql, (p.export or {}).get("sql")):
            read_logical |= {ds for ds, _ in _PLACEHOLDER.findall(text or "")}
    reads = sorted({pipeline.dataset_id(ds) for ds in read_logical})
    function = pipeline.function_name(number)
    return {
        "number": ph.number,
        "name": ph.name,
        "title": ph.title,
        "function": function,
        "deployed_name": _resource_name(pipeline, function),
        "source_dir": f"functions/{function}",
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
        "schedule": ph.schedule,
        "default_date": ph.default_date,
        "function_account_id": _account_id(pipeline.namespace, pipeline.name, f"phase{number}"),
        "push_account_id": _account_id(pipeline.namespace, pipeline.name, f"phase{number}", "push"),
    }


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
        "tables": _table_inputs(pipeline),
    }


def render(pipeline: Pipeline | None = None, project_placeholder: str = "${project}") -> str:
    """The tfvars file's text: ``{"pipeline": {...}}``, stable key order, trailing newline."""
    data = {"pipeline": terraform_inputs(pipeline or load(), project_placeholder)}
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.tfvars", description=__doc__.splitlines()[0])
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
            print(f"{args.output} is stale: run `python -m shared.tfvars --write`", file=sys.stderr)
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
