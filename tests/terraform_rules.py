"""The offline checks of the Terraform deployment (infra/terraform), shared by the test_terraform_*
modules: every ``.tf`` file parsed with python-hcl2, the deployment's contract as
``problems(parsed_tf, inputs) -> list[str]`` so the negative tests can run them on mutated copies and
prove each check reports what it guards against.

The Terraform registry is unreachable here, so ``terraform init/validate/plan`` cannot run. The
contract: per phase a trigger topic, a dead-letter topic and its subscription, a
2nd-gen function reachable only internally, a push subscription with OIDC, a 600 s ack deadline,
10-600 s backoff and dead-lettering; run.invoker for the push identity; publisher only on the next
phase's topic; dataset-level dataEditor; and every phase of the generated inputs covered without a
Terraform edit. Also: scaling from the definition (concurrency > 1 with >= 1 vCPU) and a retry policy
that outlasts the documented burst (docs/deploy.md, "Bursts"); bucket IAM limited to each phase's
folders; force_destroy as a variable; alerting (alert-entry metric whose filter matches what
cascade.runtime.alerts really logs, dead letters, backlog age, 5xx ratio, freshness) and the dashboard.

Run with the dedicated venv (python-hcl2 conflicts with checkov's pinned parser)::

    .venv-hcl/bin/python -m pytest -q tests/test_terraform_*.py -p no:cacheprovider

(``infra/check.sh`` creates the venv.) In a venv without python-hcl2 the module is skipped.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 lives in .venv-hcl (see infra/check.sh)")

REPO = Path(__file__).resolve().parent.parent
TF_ROOT = REPO / "infra" / "terraform"
PHASE_MODULE = TF_ROOT / "modules" / "phase"
TFVARS = TF_ROOT / "pipeline.auto.tfvars.json"
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"

MAX_FUNCTION_TIMEOUT = 540
ACK_DEADLINE = 600
MIN_BACKOFF, MAX_BACKOFF = 10, 600
DEAD_LETTER_RETENTION = 7 * 24 * 3600
PUBSUB_MAX_DELIVERY_ATTEMPTS = 100  # Pub/Sub accepts 5..100
MAX_CONDITION_WINDOW = 23 * 3600 + 1800  # Cloud Monitoring's longest window (23.5 h)


# ====================================================================== parsing
def _norm(value: Any) -> Any:
    """python-hcl2 output without its markers and quotes: literals plain, expressions ``${...}``."""
    if isinstance(value, dict):
        return {_norm(k): _norm(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def parse_dir(directory: Path) -> dict[str, Any]:
    """Every ``.tf`` file of one module merged: resource/data as {type: {name: body}}, etc."""
    out: dict[str, Any] = {"resource": {}, "data": {}, "module": {}, "variable": {}, "output": {},
                           "locals": {}, "terraform": [], "provider": {}, "files": []}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as fh:
            raw = _norm(hcl2.load(fh))
        out["files"].append(path.name)
        for kind in ("resource", "data"):
            for entry in raw.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        if name in out[kind].setdefault(rtype, {}):
                            raise AssertionError(f"{path}: duplicate {kind} {rtype}.{name}")
                        out[kind][rtype][name] = body
        for kind in ("module", "variable", "output", "provider"):
            for entry in raw.get(kind, []):
                for name, body in entry.items():
                    if name in out[kind]:
                        raise AssertionError(f"{path}: duplicate {kind} {name}")
                    out[kind][name] = body
        for entry in raw.get("locals", []):
            out["locals"].update(entry)
        out["terraform"].extend(raw.get("terraform", []))
    return out


def parse_all() -> dict[str, Any]:
    return {"root": parse_dir(TF_ROOT), "phase": parse_dir(PHASE_MODULE)}


def committed_inputs() -> dict[str, Any]:
    return json.loads(TFVARS.read_text())["pipeline"]


# ====================================================================== helpers
def _blocks(body: dict[str, Any] | None, name: str) -> list[dict[str, Any]]:
    value = (body or {}).get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _block(body: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    found = _blocks(body, name)
    return found[0] if found else None


def _compact(expr: Any) -> str:
    return re.sub(r"\s+", "", str(expr))


def _resolve(tf: dict[str, Any], expr: Any) -> Any:
    """Follow ``${local.x}`` indirections (one module)."""
    seen = 0
    while isinstance(expr, str) and (m := re.fullmatch(r"\$\{local\.(\w+)\}", expr.strip())) and seen < 10:
        expr = tf["locals"].get(m.group(1), expr)
        seen += 1
    return expr


def _is_all_phases(tf: dict[str, Any], expr: Any) -> bool:
    return _compact(_resolve(tf, expr)) == "${var.pipeline.phases}"


def _filtered_phases(tf: dict[str, Any], expr: Any, attribute: str) -> bool:
    """``{ for k, p in <all phases> : k => p if p.<attribute> != null }``."""
    text = _compact(_resolve(tf, expr))
    m = re.fullmatch(r"\$\{\{for(\w+),(\w+)in([\w.]+):\1=>\2if\2\." + attribute + r"!=null\}\}", text)
    return bool(m) and _is_all_phases(tf, "${" + m.group(3) + "}")


def _var_default(tf: dict[str, Any], expr: Any) -> Any:
    m = re.fullmatch(r"\$\{var\.(\w+)\}", str(expr).strip())
    if not m or m.group(1) not in tf["variable"]:
        return None
    return tf["variable"][m.group(1)].get("default")


def _number(tf: dict[str, Any], expr: Any) -> float | None:
    value = expr if isinstance(expr, (int, float)) else _var_default(tf, expr)
    return float(value) if isinstance(value, (int, float)) else None


def _refs(expr: Any, target: str) -> bool:
    return target in _compact(expr)


def _resources(tf: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return tf["resource"].get(rtype, {})


def _validation_caps(tf: dict[str, Any], var: str, limit: int) -> bool:
    """``var.<var>`` has a validation whose condition bounds it by ``<= limit``."""
    for v in _blocks(tf["variable"].get(var), "validation"):
        if re.search(rf"var\.{var}<={limit}\b", _compact(v.get("condition", ""))):
            return True
    return False


# ====================================================================== the checks
def problems(parsed_tf: dict[str, Any], inputs: dict[str, Any], source_root: Path | None = REPO) -> list[str]:
    """Everything wrong with the deployment for ``inputs`` (the tfvars' ``pipeline``); [] if fine."""
    out: list[str] = []
    out += input_problems(inputs, source_root)
    out += phase_module_problems(parsed_tf["phase"])
    out += root_problems(parsed_tf["root"], parsed_tf["phase"], inputs)
    out += burst_problems(parsed_tf["root"], inputs)
    out += monitoring_problems(parsed_tf["root"], inputs)
    return out


def input_problems(inputs: dict[str, Any], source_root: Path | None = REPO) -> list[str]:
    out: list[str] = []
    phases = inputs.get("phases") or {}
    if not phases:
        out.append("inputs: no phases")
    required = ("function", "deployed_name", "source_dir", "topic", "dead_letter_topic", "push_subscription",
                "dead_letter_subscription", "datasets", "writes_datasets", "reads_datasets",
                "function_account_id", "push_account_id", "entry_point", "default_date")
    topics: list[str] = []
    for key, ph in phases.items():
        where = f"inputs: phase {key}"
        missing = [f for f in required if f not in ph]
        if missing:
            out.append(f"{where} lacks {missing}")
            continue
        if str(ph.get("number")) != key:
            out.append(f"{where}: key does not match its number {ph.get('number')}")
        if ph["source_dir"] != "functions/phase":
            out.append(f"{where}: source_dir {ph['source_dir']} is not the generic entry point functions/phase")
        if source_root is not None and not (source_root / ph["source_dir"] / "main.py").is_file():
            out.append(f"{where}: {ph['source_dir']}/main.py does not exist (no function source to deploy)")
        topics += [ph["topic"], ph["dead_letter_topic"]]
        nxt = ph.get("next")
        if nxt is not None:
            if str(nxt) not in phases:
                out.append(f"{where}: next phase {nxt} is not a phase")
            elif ph.get("next_topic") != phases[str(nxt)]["topic"]:
                out.append(f"{where}: next_topic {ph.get('next_topic')} is not phase {nxt}'s topic")
        elif ph.get("next_topic") is not None:
            out.append(f"{where}: next_topic without next")
        for ds in ph["datasets"]:
            if ds not in inputs.get("datasets", []):
                out.append(f"{where}: dataset {ds} is not among the pipeline's datasets")
        if set(ph["datasets"]) != set(ph["writes_datasets"]) | set(ph["reads_datasets"]):
            out.append(f"{where}: datasets is not writes_datasets + reads_datasets")
        for acc in (ph["function_account_id"], ph["push_account_id"]):
            if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", acc):
                out.append(f"{where}: invalid service account id {acc!r}")
        # Scaling (docs/deploy.md, "Bursts"): concurrency > 1 needs at least 1 vCPU.
        conc, inst, cpu = ph.get("concurrency"), ph.get("max_instances"), ph.get("cpu")
        if not (isinstance(conc, int) and isinstance(inst, int) and conc >= 1 and inst >= 1 and cpu):
            out.append(f"{where}: max_instances / concurrency / cpu missing or < 1")
        else:
            if conc == 1:
                out.append(f"{where}: concurrency is 1: each instance takes one push at a time, a burst is answered 429")
            if conc > 1 and float(cpu) < 1:
                out.append(f"{where}: concurrency {conc} with cpu {cpu}: Cloud Run needs >= 1 vCPU for concurrency > 1")
        for field in ("read_prefixes", "export_prefixes"):
            for prefix in ph.get(field, []):
                if not prefix.endswith("/") or prefix == "/" or "{" in prefix:
                    out.append(f"{where}: {field} {prefix!r} is not a fixed folder of the bucket")
        if bool(ph.get("read_prefixes")) != bool(ph.get("reads_raw_bucket")):
            out.append(f"{where}: read_prefixes do not match reads_raw_bucket")
        if bool(ph.get("export_prefixes")) != bool(ph.get("writes_export_bucket")):
            out.append(f"{where}: export_prefixes do not match writes_export_bucket")
        for src in ph.get("raw_sources", []):
            if not any(src["path"].startswith(pre) for pre in ph.get("read_prefixes", [])):
                out.append(f"{where}: raw source {src['path']} is outside the phase's read_prefixes")
        out += _freshness_input_problems(where, key, ph, phases, inputs)
    if len(set(topics)) != len(topics):
        out.append("inputs: topic names are not unique")
    for tid, t in (inputs.get("tables") or {}).items():
        where = f"inputs: table {tid}"
        if t["dataset"] not in inputs.get("datasets", []):
            out.append(f"{where}: dataset {t['dataset']} is not declared")
        cols = {c["name"]: c for c in t["schema"]}
        if cols.get(t["date_column"], {}).get("mode") != "REQUIRED" or cols[t["date_column"]]["type"] != "DATE":
            out.append(f"{where}: date column {t['date_column']} must be a REQUIRED DATE")
        if len(t["clustering"]) > 4 or t["date_column"] in t["clustering"]:
            out.append(f"{where}: clustering must be at most 4 non-date columns")
        for k in t["clustering"]:
            if cols.get(k, {}).get("mode") != "REQUIRED":
                out.append(f"{where}: key {k} must be REQUIRED")
    return out


def _minutes(hh_mm: str) -> int:
    h, m = hh_mm.split(":")
    return int(h) * 60 + int(m)


def _chain_to(phases: dict[str, Any], key: str) -> list[str] | None:
    """Phase keys from the scheduled phase whose daily run reaches ``key`` to ``key`` (None if none)."""
    chain = [key]
    while not phases[chain[0]].get("schedule"):
        preds = [k for k, p in phases.items() if str(p.get("next")) == chain[0]]
        if len(preds) != 1 or preds[0] in chain:
            return None
        chain.insert(0, preds[0])
    return chain


def _freshness_input_problems(where: str, key: str, ph: dict[str, Any], phases: dict[str, Any],
                              inputs: dict[str, Any]) -> list[str]:
    """A phase reached by a daily schedule has a freshness objective whose windows add up."""
    out: list[str] = []
    fr = ph.get("freshness")
    chain = _chain_to(phases, key)
    daily = chain is not None and re.fullmatch(r"\d{1,2} \d{1,2} \* \* \*", phases[chain[0]].get("schedule") or "")
    if daily and fr is None:
        out.append(f"{where}: reached by the daily schedule of phase {chain[0]} but has no freshness objective")
    if fr is None:
        return out
    if not daily:
        out.append(f"{where}: freshness objective without a daily schedule upstream")
        return out
    minute, hour = phases[chain[0]]["schedule"].split()[:2]
    start = int(hour) * 60 + int(minute)
    deadline = _minutes(fr["complete_by"])
    if fr["starts"] != f"{start // 60:02d}:{start % 60:02d}" or str(fr["schedule_phase"]) != chain[0]:
        out.append(f"{where}: freshness starts {fr['starts']} / phase {fr['schedule_phase']} is not the schedule of phase {chain[0]}")
    if [str(n) for n in fr["chain"]] != chain:
        out.append(f"{where}: freshness chain {fr['chain']} is not {chain}")
    if fr["deadline_schedule"] != f"{deadline % 60} {deadline // 60} * * *":
        out.append(f"{where}: deadline_schedule {fr['deadline_schedule']} does not fire at complete_by {fr['complete_by']}")
    after = (deadline - start) % (24 * 60)
    if fr["window_seconds"] != after * 60 + fr["tick_seconds"] or after == 0:
        out.append(f"{where}: freshness window {fr['window_seconds']} s is not complete_by - schedule + tick "
                   f"({after * 60 + fr['tick_seconds']} s): it would miss today's run or count yesterday's")
    if fr["window_seconds"] > MAX_CONDITION_WINDOW:
        out.append(f"{where}: freshness window {fr['window_seconds']} s exceeds Cloud Monitoring's 23.5 h")
    flt = fr["log_filter"]
    services = [phases[k].get("deployed_name") for k in chain]
    for needle in ('labels.mode="daily"', f'labels.pipeline="{inputs.get("name")}"',
                   f'labels.phase="{key}" AND jsonPayload.message=~"^phase {key} for [0-9-]+: .*complete=True"',
                   "skipped: no data expected on ", *[f'"{svc}"' for svc in services]):
        if needle not in flt:
            out.append(f"{where}: freshness log filter lacks {needle}")
    return out


def phase_module_problems(m: dict[str, Any]) -> list[str]:
    out: list[str] = []
    where = "modules/phase"
    topics = _resources(m, "google_pubsub_topic")
    subs = _resources(m, "google_pubsub_subscription")
    trigger = next((n for n, b in topics.items() if _compact(b.get("name")) == "${var.phase.topic}"), None)
    dlq = next((n for n, b in topics.items() if _compact(b.get("name")) == "${var.phase.dead_letter_topic}"), None)
    if trigger is None:
        out.append(f"{where}: no trigger topic named var.phase.topic")
    if dlq is None:
        out.append(f"{where}: no dead-letter topic named var.phase.dead_letter_topic")

    # ---- dead-letter pull subscription
    dlq_subs = [b for b in subs.values() if dlq and _refs(b.get("topic"), f"google_pubsub_topic.{dlq}.")]
    if not dlq_subs:
        out.append(f"{where}: no subscription on the dead-letter topic")
    for b in dlq_subs:
        if _block(b, "push_config"):
            out.append(f"{where}: the dead-letter subscription must be a pull subscription")
        if _compact(b.get("name")) != "${var.phase.dead_letter_subscription}":
            out.append(f"{where}: the dead-letter subscription is not named var.phase.dead_letter_subscription")
        retention = str(b.get("message_retention_duration", ""))
        seconds = _number(m, "${" + retention[2:-2] + "}") if retention.startswith("${") and retention.endswith("}s") \
            else (float(retention[:-1]) if retention.endswith("s") and retention[:-1].isdigit() else None)
        if seconds != DEAD_LETTER_RETENTION:
            out.append(f"{where}: the dead-letter subscription keeps messages {retention} (want 7 days)")

    # ---- the function
    fns = _resources(m, "google_cloudfunctions2_function")
    if len(fns) != 1:
        out.append(f"{where}: want exactly one google_cloudfunctions2_function, found {len(fns)}")
    fn_name = next(iter(fns), None)
    for name, fn in fns.items():
        if _block(fn, "event_trigger"):
            out.append(f"{where}: function {name} has an event_trigger (triggers come by direct push)")
        sc = _block(fn, "service_config") or {}
        if sc.get("ingress_settings") != "ALLOW_INTERNAL_ONLY":
            out.append(f"{where}: function {name} ingress is {sc.get('ingress_settings')!r}, not ALLOW_INTERNAL_ONLY")
        timeout = sc.get("timeout_seconds")
        t = _number(m, timeout)
        var = re.fullmatch(r"\$\{var\.(\w+)\}", str(timeout))
        if t is not None and t > MAX_FUNCTION_TIMEOUT:
            out.append(f"{where}: function timeout {t} > {MAX_FUNCTION_TIMEOUT}")
        if t is None and not (var and _validation_caps(m, var.group(1), MAX_FUNCTION_TIMEOUT)):
            out.append(f"{where}: function timeout {timeout} is not bounded by {MAX_FUNCTION_TIMEOUT}")
        if not _refs(sc.get("service_account_email"), "google_service_account."):
            out.append(f"{where}: function {name} does not run as its own service account")
        # Scaling from the definition (docs/deploy.md, "Bursts").
        if _compact(sc.get("max_instance_count")) != "${var.phase.max_instances}":
            out.append(f"{where}: function {name} max_instance_count is not the definition's (var.phase.max_instances)")
        if _compact(sc.get("max_instance_request_concurrency")) != "${var.phase.concurrency}":
            out.append(f"{where}: function {name} max_instance_request_concurrency is not the definition's "
                       f"(var.phase.concurrency)")
        if _compact(sc.get("available_cpu")) != "${var.phase.cpu}":
            out.append(f"{where}: function {name} available_cpu is not var.phase.cpu (>= 1 vCPU for concurrency > 1)")
        if "THREADS=tostring(var.phase.concurrency)" not in _compact(sc.get("environment_variables")):
            out.append(f"{where}: function {name} does not run THREADS = concurrency request threads")
        if "CASCADE_PHASE=tostring(var.phase.number)" not in _compact(sc.get("environment_variables")):
            out.append(f"{where}: function {name} does not tell the generic entry point its phase (CASCADE_PHASE)")
        if not sc.get("environment_variables"):
            out.append(f"{where}: function {name} has no environment variables")
    fn_sa = None
    if fn_name:
        sc = _block(fns[fn_name], "service_config") or {}
        m_sa = re.search(r"google_service_account\.(\w+)\.", str(sc.get("service_account_email")))
        fn_sa = m_sa.group(1) if m_sa else None

    # ---- push subscription
    push_subs = {n: b for n, b in subs.items() if _block(b, "push_config")}
    if len(push_subs) != 1:
        out.append(f"{where}: want exactly one push subscription, found {len(push_subs)}")
    push_sa = None
    for name, b in push_subs.items():
        w = f"{where}: push subscription {name}"
        if not (trigger and _refs(b.get("topic"), f"google_pubsub_topic.{trigger}.")):
            out.append(f"{w} is not on the trigger topic")
        if _compact(b.get("name")) != "${var.phase.push_subscription}":
            out.append(f"{w} is not named var.phase.push_subscription")
        if b.get("ack_deadline_seconds") != ACK_DEADLINE:
            out.append(f"{w}: ack_deadline_seconds is {b.get('ack_deadline_seconds')}, want {ACK_DEADLINE}")
        dlp = _block(b, "dead_letter_policy")
        if not dlp:
            out.append(f"{w} has no dead_letter_policy")
        else:
            if not (dlq and _refs(dlp.get("dead_letter_topic"), f"google_pubsub_topic.{dlq}.")):
                out.append(f"{w}: dead_letter_policy does not point at the dead-letter topic")
            if not _refs(dlp.get("max_delivery_attempts"), "var.max_delivery_attempts"):
                out.append(f"{w}: max_delivery_attempts is not var.max_delivery_attempts")
        rp = _block(b, "retry_policy")
        if not rp:
            out.append(f"{w} has no retry_policy")
        else:
            if _compact(rp.get("minimum_backoff")) != "${var.min_retry_backoff_seconds}s":
                out.append(f"{w}: minimum_backoff is not var.min_retry_backoff_seconds")
            if _compact(rp.get("maximum_backoff")) != "${var.max_retry_backoff_seconds}s":
                out.append(f"{w}: maximum_backoff is not var.max_retry_backoff_seconds")
        pc = _block(b, "push_config") or {}
        if not (fn_name and _refs(pc.get("push_endpoint"), f"google_cloudfunctions2_function.{fn_name}.")):
            out.append(f"{w}: push_endpoint is not the function's URL")
        oidc = _block(pc, "oidc_token")
        if not oidc:
            out.append(f"{w} has no oidc_token")
        else:
            m_sa = re.search(r"google_service_account\.(\w+)\.email", str(oidc.get("service_account_email")))
            push_sa = m_sa.group(1) if m_sa else None
            if push_sa is None:
                out.append(f"{w}: oidc_token does not use a service account of the module")
            elif push_sa == fn_sa:
                out.append(f"{w}: the push identity must be a dedicated account, not the function's")
            if not oidc.get("audience"):
                out.append(f"{w}: oidc_token has no audience")

    # ---- run.invoker for the push identity on the function's service
    invokers = [b for rtype in ("google_cloud_run_v2_service_iam_member", "google_cloud_run_service_iam_member")
                for b in _resources(m, rtype).values() if b.get("role") == "roles/run.invoker"]
    if not any(push_sa and _refs(b.get("member"), f"google_service_account.{push_sa}.")
               and fn_name and (_refs(b.get("name"), f"google_cloudfunctions2_function.{fn_name}.")
                                or _refs(b.get("service"), f"google_cloudfunctions2_function.{fn_name}."))
               for b in invokers):
        out.append(f"{where}: no roles/run.invoker binding for the push identity on the function's service")

    # ---- Pub/Sub service agent (dead-lettering)
    agent = "var.pubsub_service_agent"
    topic_iam = _resources(m, "google_pubsub_topic_iam_member")
    sub_iam = _resources(m, "google_pubsub_subscription_iam_member")

    def agent_member(b: dict[str, Any]) -> bool:
        return _refs(_resolve(m, b.get("member")), agent)

    if not any(dlq and _refs(b.get("topic"), f"google_pubsub_topic.{dlq}.") and b.get("role") == "roles/pubsub.publisher"
               and agent_member(b) for b in topic_iam.values()):
        out.append(f"{where}: the Pub/Sub service agent cannot publish to the dead-letter topic")
    push_name = next(iter(push_subs), None)
    if not any(push_name and _refs(b.get("subscription"), f"google_pubsub_subscription.{push_name}.")
               and b.get("role") == "roles/pubsub.subscriber" and agent_member(b) for b in sub_iam.values()):
        out.append(f"{where}: the Pub/Sub service agent is not a subscriber of the push subscription")
    # Publisher grants in the module go to the service agent only: the function publishes only to the
    # next phase's topic (granted by the root module).
    for name, b in topic_iam.items():
        if b.get("role") in ("roles/pubsub.publisher", "roles/pubsub.editor", "roles/pubsub.admin") and not agent_member(b):
            out.append(f"{where}: google_pubsub_topic_iam_member.{name} grants {b.get('role')} to someone "
                       f"other than the Pub/Sub service agent")

    # ---- function permissions
    fn_member = f"google_service_account.{fn_sa}." if fn_sa else "<no function account>"
    editors = [b for b in _resources(m, "google_bigquery_dataset_iam_member").values()
               if b.get("role") == "roles/bigquery.dataEditor" and _refs(b.get("member"), fn_member)]
    if not any(_refs(b.get("for_each"), "var.write_datasets") and _refs(b.get("dataset_id"), "each.") for b in editors):
        out.append(f"{where}: no dataset-level roles/bigquery.dataEditor for the function on var.write_datasets")
    project_roles = {b.get("role") for b in _resources(m, "google_project_iam_member").values()
                     if _refs(b.get("member"), fn_member)}
    for role in ("roles/bigquery.jobUser", "roles/datastore.user"):
        if role not in project_roles:
            out.append(f"{where}: the function lacks project-level {role}")
    extra = project_roles - {"roles/bigquery.jobUser", "roles/datastore.user"}
    if extra:
        out.append(f"{where}: the function has unexpected project-level roles {sorted(extra)}")
    for rtype in ("google_project_iam_binding", "google_project_iam_policy", "google_pubsub_topic_iam_binding",
                  "google_pubsub_topic_iam_policy", "google_bigquery_dataset_iam_binding"):
        if _resources(m, rtype):
            out.append(f"{where}: uses authoritative IAM {rtype}")

    # ---- the concurrency/CPU rule is enforced at plan time too
    if not any("var.phase.concurrency==1||tonumber(var.phase.cpu)>=1" in _compact(v.get("condition"))
               for v in _blocks(m["variable"].get("phase"), "validation")):
        out.append(f"{where}: var.phase has no validation that concurrency > 1 comes with >= 1 vCPU")

    # ---- the bucket: only the phase's own folders, by IAM condition on the object name
    bucket_iam = _resources(m, "google_storage_bucket_iam_member")
    for kind, role, prefixes in (("read", "roles/storage.objectViewer", "var.phase.read_prefixes"),
                                 ("export", "roles/storage.objectAdmin", "var.phase.export_prefixes")):
        good = [b for b in bucket_iam.values() if b.get("role") == role and _refs(b.get("for_each"), prefixes)
                and _refs(b.get("member"), fn_member)]
        if not good:
            out.append(f"{where}: no {role} for the function over {prefixes} ({kind} folders of the bucket)")
    for name, b in bucket_iam.items():
        cond = _block(b, "condition") or {}
        expr = _compact(cond.get("expression"))
        if not (b.get("role") in ("roles/storage.objectViewer", "roles/storage.objectAdmin")
                and 'resource.name.startsWith(\\"projects/_/buckets/${var.bucket}/objects/${each.value}\\")' in expr):
            out.append(f"{where}: google_storage_bucket_iam_member.{name} is not limited to a folder of the bucket "
                       f"(condition resource.name.startsWith(\"projects/_/buckets/<bucket>/objects/<prefix>\"))")
    for rtype in ("google_storage_bucket_iam_binding", "google_storage_bucket_iam_policy"):
        if _resources(m, rtype):
            out.append(f"{where}: uses authoritative IAM {rtype}")

    # ---- every variable is described; the timeout is capped
    for name, v in m["variable"].items():
        if not v.get("description"):
            out.append(f"{where}: variable {name} has no description")
    return out


def backoff_schedule(attempts: int, minimum: float, maximum: float) -> list[float]:
    """The delays before redeliveries 2..attempts: exponential from ``minimum``, capped at ``maximum``.

    10-600 s: 10, 20, 40, 80, 160, 320, 600, 600, ... (docs/deploy.md, "Bursts").
    """
    return [min(maximum, minimum * 2 ** k) for k in range(attempts - 1)]


def burst_problems(r: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    """A burst of ``inputs.burst_messages`` on one phase must not dead-letter a message that never ran.

    Capacity is max_instances x concurrency pushes at once; a push beyond it is answered 429 and
    counts as a failed delivery. At worst every run takes the function timeout, so the burst drains
    in ceil(N / capacity) waves of `timeout` seconds. The retry policy keeps a message alive for the
    sum of its backoffs: that must outlast the drain (with exponential backoff), and even with the
    backoff stuck at its minimum it must outlast one wave.
    """
    out: list[str] = []
    where = "root: burst"
    n = inputs.get("burst_messages")
    if not isinstance(n, int) or n < 1:
        return [f"{where}: inputs carry no burst_messages (documented burst size)"]
    attempts = _number(r, "${var.max_delivery_attempts}")
    lo, hi = _number(r, "${var.min_retry_backoff_seconds}"), _number(r, "${var.max_retry_backoff_seconds}")
    run = _number(r, "${var.function_timeout_seconds}")
    if None in (attempts, lo, hi, run):
        return [f"{where}: max_delivery_attempts, retry backoffs or the function timeout have no default"]
    if not 5 <= attempts <= PUBSUB_MAX_DELIVERY_ATTEMPTS:
        out.append(f"{where}: max_delivery_attempts {attempts:g} is outside Pub/Sub's 5..100")
    survive = sum(backoff_schedule(int(attempts), lo, hi))
    survive_floor = (attempts - 1) * lo
    for key, ph in sorted((inputs.get("phases") or {}).items()):
        capacity = (ph.get("max_instances") or 0) * (ph.get("concurrency") or 0)
        if capacity < 1:
            continue  # reported by input_problems
        drain = -(-n // capacity) * run
        if survive < drain:
            out.append(f"{where}: phase {key}: {attempts:g} deliveries survive {survive:g} s of backoff, but a burst of "
                       f"{n} messages at {ph['max_instances']} x {ph['concurrency']} takes up to {drain:g} s to drain "
                       f"({-(-n // capacity)} waves of {run:g} s): messages that never ran would be dead-lettered")
        if survive_floor < run:
            out.append(f"{where}: phase {key}: with the backoff at its minimum, {attempts:g} deliveries last {survive_floor:g} s, "
                       f"less than one wave of runs ({run:g} s)")
    return out


def _policies(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources(r, "google_monitoring_alert_policy")


def _conditions(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [_block(c, "condition_threshold") or {} for c in _blocks(policy, "conditions")]


def monitoring_problems(r: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    """Alerting and the dashboard, derived from the inputs (docs/deploy.md, "Alerting")."""
    out: list[str] = []
    where = "root: monitoring"
    mon = inputs.get("monitoring") or {}
    name = inputs.get("name", "")

    # ---- channels: a list of ids and/or an e-mail; every policy notifies them
    channels = _compact(r["locals"].get("notification_channels"))
    if not ("var.notification_channels" in channels and "google_monitoring_notification_channel.email" in channels):
        out.append(f"{where}: local.notification_channels is not var.notification_channels + the alert_email channel")
    if r["variable"].get("notification_channels", {}).get("default") != []:
        out.append(f"{where}: variable notification_channels (list of channel ids, default []) is missing")
    for pname, pol in _policies(r).items():
        if _compact(pol.get("notification_channels")) != "${local.notification_channels}":
            out.append(f"{where}: alert policy {pname} does not notify local.notification_channels")
        if not (_block(pol, "documentation") or {}).get("content"):
            out.append(f"{where}: alert policy {pname} has no documentation")

    # ---- Cascade's alert entries: severity, the alert flag and the pipeline label, exactly
    flt = mon.get("alert_log_filter", "")
    for needle in ('resource.type="cloud_run_revision"', "severity=ERROR", "jsonPayload.alert=true",
                   f'labels.pipeline="{name}"', *[f'"{svc}"' for svc in mon.get("services", [])]):
        if needle not in flt:
            out.append(f"{where}: the alert log filter lacks {needle}")
    services = {p.get("deployed_name") for p in (inputs.get("phases") or {}).values()} | {inputs.get("sweeper", {}).get("deployed_name")}
    if set(mon.get("services", [])) != services:
        out.append(f"{where}: monitoring services {mon.get('services')} are not every function of the pipeline")
    metrics = _resources(r, "google_logging_metric")
    alert_metric = next((n for n, b in metrics.items()
                         if _compact(b.get("filter")) == "${var.pipeline.monitoring.alert_log_filter}"), None)
    if alert_metric is None:
        out.append(f"{where}: no log-based metric with filter var.pipeline.monitoring.alert_log_filter")
    elif not any(_refs(c.get("filter"), f"google_logging_metric.{alert_metric}.name") and c.get("comparison") == "COMPARISON_GT"
                 for pol in _policies(r).values() if not pol.get("for_each") for c in _conditions(pol)):
        out.append(f"{where}: no alert policy on the alert-entry metric google_logging_metric.{alert_metric}")

    # ---- per phase: dead letters, oldest unacked on the push subscription, function 5xx ratio
    def per_phase(label: str, *needles: str, threshold: str, denominator: str | None = None) -> None:
        for pol in _policies(r).values():
            if not _is_all_phases(r, pol.get("for_each")):
                continue
            for c in _conditions(pol):
                text = _compact(c.get("filter"))
                if (all(x in text for x in needles) and _compact(c.get("threshold_value")) == threshold
                        and c.get("comparison") == "COMPARISON_GT"
                        and (denominator is None or denominator in _compact(c.get("denominator_filter")))):
                    return
        out.append(f"{where}: no per-phase alert policy on {label}")

    per_phase("dead-letter subscription backlog", "module.phase[each.key].dead_letter_subscription_name",
              "subscription/num_undelivered_messages", threshold="0")
    per_phase("the push subscription's oldest unacked message age", "module.phase[each.key].push_subscription_name",
              "subscription/oldest_unacked_message_age", threshold="${var.oldest_unacked_alert_seconds}")
    per_phase("the function's 5xx ratio", "module.phase[each.key].function_name", "run.googleapis.com/request_count",
              'response_code_class=\\"5xx\\"', threshold="${var.function_error_ratio}",
              denominator="module.phase[each.key].function_name")

    # ---- freshness: deadline tick AND nothing done in the window, per phase with an objective
    fresh_local = _compact(r["locals"].get("freshness_phases"))
    if not re.fullmatch(r"\$\{\{for(\w+),(\w+)inlocal\.phases:\1=>\2if\2\.freshness!=null\}\}", fresh_local):
        out.append(f"{where}: local.freshness_phases is not the phases with a freshness objective")
    fresh = "local.freshness_phases"
    jobs = [b for b in _resources(r, "google_cloud_scheduler_job").values() if _compact(b.get("for_each")) == "${" + fresh + "}"]
    if not any(_compact(b.get("schedule")) == "${each.value.freshness.deadline_schedule}"
               and _compact(b.get("time_zone")) == "${var.pipeline.time_zone}"
               and _refs((_block(b, "pubsub_target") or {}).get("topic_name"), "google_pubsub_topic.") for b in jobs):
        out.append(f"{where}: no deadline Cloud Scheduler job per freshness phase at complete_by in the pipeline's time zone")
    done = next((n for n, b in metrics.items() if _compact(b.get("for_each")) == "${" + fresh + "}"
                 and _compact(b.get("filter")) == "${each.value.freshness.log_filter}"), None)
    if done is None:
        out.append(f"{where}: no daily-done log metric per freshness phase (filter each.value.freshness.log_filter)")
    good = False
    for pol in _policies(r).values():
        if _compact(pol.get("for_each")) != "${" + fresh + "}":
            continue
        conds = _conditions(pol)
        tick = any("topic/send_message_operation_count" in _compact(c.get("filter"))
                   and _refs(c.get("filter"), "google_pubsub_topic.") and c.get("comparison") == "COMPARISON_GT"
                   and _compact((_block(c, "aggregations") or {}).get("alignment_period")) == "${each.value.freshness.tick_seconds}s"
                   for c in conds)
        absent = any(done and _refs(c.get("filter"), f"google_logging_metric.{done}[each.key].name")
                     and c.get("comparison") == "COMPARISON_LT" and c.get("threshold_value") == 1
                     and c.get("evaluation_missing_data") == "EVALUATION_MISSING_DATA_ACTIVE"
                     and _compact((_block(c, "aggregations") or {}).get("alignment_period")) == "${each.value.freshness.window_seconds}s"
                     for c in conds)
        good = good or (pol.get("combiner") == "AND" and tick and absent)
    if not good:
        out.append(f"{where}: no freshness alert policy per phase (AND of the deadline tick and no daily-done entry "
                   f"over the window, missing data counted as not done)")

    # ---- the dashboard: built from the phases (push + dead-letter subscriptions, function)
    dashboards = _resources(r, "google_monitoring_dashboard")
    series = _compact(r["locals"].get("dashboard_series"))
    if not any(_refs(b.get("dashboard_json"), "local.dashboard_series") for b in dashboards.values()):
        out.append(f"{where}: no google_monitoring_dashboard built from local.dashboard_series")
    for needle in ("forkinlocal.phases", "p.push_subscription", "p.dead_letter_subscription", "p.deployed_name",
                   "forkinlocal.freshness_phases"):
        if needle not in series.replace("k,p", "k"):
            out.append(f"{where}: the dashboard lacks per-phase series ({needle})")
    return out


def root_problems(r: dict[str, Any], m: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    where = "root"

    # ---- versions: exact provider pins
    tf = r["terraform"][0] if r["terraform"] else {}
    if not re.fullmatch(r">=\s*1\.(5|[6-9]|\d\d)(\.\d+)?", str(tf.get("required_version", ""))):
        out.append(f"{where}: required_version must be >= 1.5")
    providers = (_block(tf, "required_providers") or {})
    for p in ("google", "google-beta", "archive"):
        version = (providers.get(p) or {}).get("version", "")
        if not re.fullmatch(r"=\s*\d+\.\d+\.\d+", str(version)):
            out.append(f"{where}: provider {p} is not pinned exactly (version {version!r})")
    if (providers.get("google") or {}).get("version") != (providers.get("google-beta") or {}).get("version"):
        out.append(f"{where}: google and google-beta pins differ")

    # ---- phase coverage: every phase of the inputs gets a module instance
    calls = {n: b for n, b in r["module"].items() if b.get("source") == "./modules/phase"}
    covered: set[str] = set()
    for name, body in calls.items():
        if _is_all_phases(r, body.get("for_each")):
            covered |= set(inputs.get("phases", {}))
        else:
            mm = re.search(r'var\.pipeline\.phases\[\s*"?(\w+)"?\s*\]', str(body.get("phase", "")))
            if mm:
                covered.add(mm.group(1))
    for key in inputs.get("phases", {}):
        if key not in covered:
            out.append(f"{where}: phase {key} of the inputs has no phase module instance "
                       f"(module \"phase\" must use for_each = var.pipeline.phases)")
    phase_call = next((b for b in calls.values() if _is_all_phases(r, b.get("for_each"))), None)
    if phase_call is not None:
        needed = {n for n, v in m["variable"].items() if "default" not in v}
        missing = needed - set(phase_call)
        if missing:
            out.append(f"{where}: module phase misses required inputs {sorted(missing)}")
        for arg, var in (("min_retry_backoff_seconds", MIN_BACKOFF), ("max_retry_backoff_seconds", MAX_BACKOFF)):
            if _number(r, phase_call.get(arg)) != var:
                out.append(f"{where}: {arg} defaults to {_number(r, phase_call.get(arg))}, want {var}")
        if not _refs(phase_call.get("max_delivery_attempts"), "var.max_delivery_attempts"):
            out.append(f"{where}: module phase max_delivery_attempts is not var.max_delivery_attempts")
        t = _number(r, phase_call.get("timeout_seconds"))
        var = re.fullmatch(r"\$\{var\.(\w+)\}", str(phase_call.get("timeout_seconds")))
        if t is None or t > MAX_FUNCTION_TIMEOUT or not (var and _validation_caps(r, var.group(1), MAX_FUNCTION_TIMEOUT)):
            out.append(f"{where}: the function timeout variable must default to <= {MAX_FUNCTION_TIMEOUT} and be validated")
        if not _refs(phase_call.get("write_datasets"), "each.value.writes_datasets"):
            out.append(f"{where}: module phase write_datasets do not come from the phase's inputs")
        if not _refs(phase_call.get("read_datasets"), "each.value.reads_datasets"):
            out.append(f"{where}: module phase read_datasets do not come from the phase's inputs")
        if "bucket_role" in phase_call or _compact(phase_call.get("phase")) != "${each.value}":
            out.append(f"{where}: module phase bucket access must come from the phase's inputs (read/export prefixes)")
        if not _refs(phase_call.get("source_object"), "[each.key]"):
            out.append(f"{where}: module phase source_object is not the phase's own zip")
    env = _compact(_resolve(r, (phase_call or {}).get("environment")))
    for key, want in (("CASCADE_PROJECT", "var.project_id"), ("CASCADE_PIPELINE_FILE", "var.pipeline.definition_file"),
                      ('CASCADE_PRODUCTION', '"1"'), ("CASCADE_MAX_ATTEMPTS", "tostring(var.max_run_attempts)")):
        if f"{key}={want}" not in env:
            out.append(f"{where}: function environment lacks {key} = {want}")

    # ---- publisher only on the next phase's topic
    edges = [b for b in _resources(r, "google_pubsub_topic_iam_member").values()
             if b.get("role") == "roles/pubsub.publisher" and _refs(b.get("member"), "module.phase[each.key].service_account_member")]
    if not any(_filtered_phases(r, b.get("for_each"), "next") and _refs(b.get("topic"), "module.phase[tostring(each.value.next)].topic")
               for b in edges):
        out.append(f"{where}: no pubsub.publisher grant of each phase's function on the next phase's topic")
    for b in edges:
        if not _refs(b.get("topic"), "each.value.next"):
            out.append(f"{where}: a phase function is granted publisher on a topic other than the next phase's")
    for rtype in ("google_project_iam_member",):
        for name, b in _resources(r, rtype).items():
            if _refs(b.get("member"), "module.phase") or str(b.get("role", "")).startswith(("roles/pubsub", "roles/bigquery.data")):
                if b.get("role") not in ("roles/bigquery.jobUser",):
                    out.append(f"{where}: {rtype}.{name} grants {b.get('role')} project-wide")

    # ---- pubsub service agent
    agent = _compact(r["locals"].get("pubsub_service_agent", ""))
    if "@gcp-sa-pubsub.iam.gserviceaccount.com" not in agent or "data.google_project" not in agent:
        out.append(f"{where}: the Pub/Sub service agent is not derived from the project number")
    if phase_call is not None and not _refs(phase_call.get("pubsub_service_agent"), "local.pubsub_service_agent"):
        out.append(f"{where}: module phase is not given the Pub/Sub service agent")

    # ---- schedules
    jobs = _resources(r, "google_cloud_scheduler_job")
    phase_jobs = [b for b in jobs.values() if _block(b, "pubsub_target")]
    good = False
    for b in phase_jobs:
        tgt = _block(b, "pubsub_target") or {}
        data = _compact(tgt.get("data"))
        ok = (_filtered_phases(r, b.get("for_each"), "schedule") and _compact(b.get("schedule")) == "${each.value.schedule}"
              and _compact(b.get("time_zone")) == "${var.pipeline.time_zone}"
              and _refs(tgt.get("topic_name"), "module.phase[each.key].topic")
              and "pipeline=var.pipeline.name" in data and "phase=each.value.number" in data)
        if "data_date" in data:
            out.append(f"{where}: scheduled triggers must not carry a date (the function resolves it)")
        good = good or ok
    if not good:
        out.append(f"{where}: no Cloud Scheduler job per scheduled phase (for_each over phases with a schedule, "
                   f"pipeline time zone, body {{pipeline, phase}} to the phase's topic)")
    for key, ph in inputs.get("phases", {}).items():
        if ph.get("schedule") and not good:
            out.append(f"{where}: scheduled phase {key} has no Cloud Scheduler job")
    sweeper_jobs = [b for b in jobs.values() if _block(b, "http_target") or
                    _refs((_block(b, "pubsub_target") or {}).get("topic_name"), "sweeper")]
    if not any(_var_default(r, b.get("schedule")) == "*/10 * * * *" or b.get("schedule") == "*/10 * * * *"
               for b in sweeper_jobs):
        out.append(f"{where}: no sweeper Cloud Scheduler job every 10 minutes")
    sweeper_pub = [b for b in _resources(r, "google_pubsub_topic_iam_member").values()
                   if _refs(b.get("member"), "google_service_account.sweeper")]
    if not any(b.get("role") == "roles/pubsub.publisher" and _refs(b.get("topic"), "module.phase[each.key].topic")
               and (_is_all_phases(r, b.get("for_each")) or "local.phases" in _compact(b.get("for_each")))
               for b in sweeper_pub):
        out.append(f"{where}: the sweeper cannot publish to every phase topic")
    if not any(b.get("role") == "roles/datastore.user" and _refs(b.get("member"), "google_service_account.sweeper")
               for b in _resources(r, "google_project_iam_member").values()):
        out.append(f"{where}: the sweeper lacks roles/datastore.user")

    # ---- Firestore, BigQuery, buckets
    if not any(b.get("type") == "FIRESTORE_NATIVE" for b in _resources(r, "google_firestore_database").values()):
        out.append(f"{where}: no native-mode Firestore database")
    if not any(_refs(b.get("for_each"), "var.pipeline.datasets") for b in _resources(r, "google_bigquery_dataset").values()):
        out.append(f"{where}: BigQuery datasets do not come from var.pipeline.datasets")
    tables = [b for b in _resources(r, "google_bigquery_table").values() if _refs(b.get("for_each"), "var.pipeline.tables")]
    if not tables:
        out.append(f"{where}: BigQuery tables do not come from var.pipeline.tables")
    for b in tables:
        tp = _block(b, "time_partitioning") or {}
        if _compact(tp.get("field")) != "${each.value.date_column}":
            out.append(f"{where}: tables are not partitioned on their date column")
        if not _refs(b.get("clustering"), "each.value.clustering"):
            out.append(f"{where}: tables are not clustered on their keys")
        if not _refs(b.get("schema"), "each.value.schema"):
            out.append(f"{where}: table schemas do not come from the inputs")
        if "deletion_protection" not in b:
            out.append(f"{where}: tables lack deletion_protection")
    if r["variable"].get("force_destroy", {}).get("default") is not False:
        out.append(f"{where}: variable force_destroy must exist and default to false")
    for name, b in _resources(r, "google_storage_bucket").items():
        if _compact(b.get("force_destroy")) != "${var.force_destroy}":
            out.append(f"{where}: bucket {name} force_destroy is not var.force_destroy")
        if b.get("uniform_bucket_level_access") is not True:
            out.append(f"{where}: bucket {name} lacks uniform bucket-level access")
        if (_block(b, "versioning") or {}).get("enabled") is not True:
            out.append(f"{where}: bucket {name} is not versioned")

    # ---- source packaging: hash-named object per phase, with the library
    archives = [(n, b) for n, b in r["data"].get("archive_file", {}).items() if _is_all_phases(r, b.get("for_each"))]
    if not archives:
        out.append(f"{where}: no per-phase archive_file of the function source")
    for name, b in archives:
        text = _compact(json.dumps(b))
        for needle in ("main.py", "each.value.source_dir", "requirements.txt"):
            if needle not in text:
                out.append(f"{where}: archive_file.{name} does not package {needle}")
        libs = _compact(r["locals"].get("library_files", "")) + text
        if "runtime_files" not in libs or "definition_file" not in libs or "definition_modules" not in libs:
            out.append(f"{where}: archive_file.{name} does not package the runtime library files and the pipeline "
                       f"definition")
        objects = [o for o in _resources(r, "google_storage_bucket_object").values()
                   if _refs(o.get("name"), f"data.archive_file.{name}[each.key].output_")]
        if not objects:
            out.append(f"{where}: no bucket object named after archive_file.{name}'s hash")

    for name, v in r["variable"].items():
        if not v.get("description"):
            out.append(f"{where}: variable {name} has no description")
    return out


# ====================================================================== fixtures (this module is a pytest plugin: -p tests.terraform_rules)
@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    return parse_all()


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    return committed_inputs()


# ====================================================================== the main venv
def _main_python() -> Path:
    if not MAIN_PYTHON.exists():
        pytest.skip(f"{MAIN_PYTHON.relative_to(REPO)} is absent: create the main venv to regenerate the tfvars")
    return MAIN_PYTHON


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env["PYTHONPATH"] = str(REPO)
    return env


# ====================================================================== mutations for the negative tests
def _phase_resource(tf: dict[str, Any], rtype: str, pred) -> dict[str, Any]:
    return next(b for b in tf["resource"][rtype].values() if pred(b))


def _push_sub(tf: dict[str, Any]) -> dict[str, Any]:
    return _phase_resource(tf, "google_pubsub_subscription", lambda b: _block(b, "push_config"))


def _mutated(parsed: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(parsed)


# ====================================================================== scaling and bursts
def definition_problems(inputs: dict[str, Any], described: dict[str, Any]) -> list[str]:
    """The scaling of every deployed phase is the definition's (``Pipeline.describe()``)."""
    out = []
    for ph in described["phases"]:
        got = (inputs.get("phases") or {}).get(str(ph["number"]), {})
        for field in ("max_instances", "concurrency"):
            if got.get(field) != ph[field]:
                out.append(f"inputs: phase {ph['number']} {field} {got.get(field)} is not the definition's {ph[field]}")
    return out


def _described() -> dict[str, Any]:
    script = "import json; from cascade.definition.loading import load; print(json.dumps(load().describe('p')))"
    proc = subprocess.run([str(_main_python()), "-c", script], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ====================================================================== alerting
_TOKEN = re.compile(r'\s*(\(|\)|=~|=|"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.\-/@]+)')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m, f"cannot tokenize {text[pos:]!r}"
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def log_filter_matches(log_filter: str, entry: dict[str, Any]) -> bool:
    """Evaluate the subset of the Cloud Logging query language our filters use on one LogEntry:
    lines and AND are conjunctions, OR, parentheses, ``path=value``, ``path=(v1 OR v2)``, ``path=~"re"``."""
    toks = _tokens(" AND ".join(line for line in log_filter.splitlines() if line.strip()))
    pos = 0

    def value_of(path: str) -> Any:
        cur: Any = entry
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        return cur

    def literal(tok: str) -> str:
        return json.loads(tok) if tok.startswith('"') else tok

    def as_text(v: Any) -> str | None:
        return None if v is None else (str(v).lower() if isinstance(v, bool) else str(v))

    def comparison() -> bool:
        nonlocal pos
        path, op = toks[pos], toks[pos + 1]
        pos += 2
        got = as_text(value_of(path))
        if op == "=~":
            pattern = literal(toks[pos])
            pos += 1
            return got is not None and re.search(pattern, got) is not None
        if toks[pos] == "(":
            pos += 1
            options = []
            while toks[pos] != ")":
                if toks[pos] != "OR":
                    options.append(literal(toks[pos]))
                pos += 1
            pos += 1
            return got in options
        want = literal(toks[pos])
        pos += 1
        return got == want

    def factor() -> bool:
        nonlocal pos
        if toks[pos] == "(":
            pos += 1
            v = expr()
            assert toks[pos] == ")"
            pos += 1
            return v
        return comparison()

    def term() -> bool:
        nonlocal pos
        v = factor()
        while pos < len(toks) and toks[pos] == "AND":
            pos += 1
            v = factor() and v
        return v

    def expr() -> bool:
        nonlocal pos
        v = term()
        while pos < len(toks) and toks[pos] == "OR":
            pos += 1
            v = term() or v
        return v

    result = expr()
    assert pos == len(toks), f"unparsed: {toks[pos:]}"
    return result


def _as_log_entry(line: str, service: str) -> dict[str, Any]:
    """One stdout JSON line as Cloud Logging stores it (structured logging on Cloud Run)."""
    payload = json.loads(line)
    return {"resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
            "severity": payload.pop("severity"), "labels": payload.pop("logging.googleapis.com/labels", {}),
            "jsonPayload": payload}


def _alert_log_line() -> str:
    """What cascade.runtime.alerts.LogAlertSink writes for a failed partition (the runner's labels)."""
    script = """
import io
from cascade.runtime import logs
from cascade.runtime.alerts import Alert, LogAlertSink
buf = io.StringIO()
logs.configure(stream=buf)
LogAlertSink().send(Alert("player_game_summary FAILED for 2025-01-15", "boom", labels=dict(
    pipeline="nba", phase=3, processor="player_game_summary", date="2025-01-15", generation=0)))
print(buf.getvalue().strip().splitlines()[-1])
"""
    proc = subprocess.run([str(_main_python()), "-c", script], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _runner_log_lines(phase: int, day: str = "2025-01-15") -> dict[str, str]:
    """The runner's summary and skipped-date lines for ``phase``, rendered from its source's f-strings, so a
    change of their wording fails here (and the freshness filters must follow it)."""
    src = (REPO / "shared" / "runtime" / "runner.py").read_text()
    for needle in ('f"phase {trigger.phase} for {day}: "', '+ f"; complete={result.complete} downstream=',
                   'f"phase {trigger.phase} skipped: {reason}"', 'reason = f"no data expected on {day} (', "mode=trigger.mode"):
        assert needle in src, f"shared/runtime/runner.py no longer logs {needle}: update shared/deploy/tfvars.py freshness()"
    return {"complete": f"phase {phase} for {day}: a=success, b=success; complete=True downstream=none",
            "incomplete": f"phase {phase} for {day}: a=success, b=failed; complete=False downstream=-",
            "skipped": f"phase {phase} skipped: no data expected on {day} (All-Star break)"}


def _runner_entry(inputs: dict[str, Any], phase: int, message: str, mode: str = "daily") -> dict[str, Any]:
    return {"resource": {"type": "cloud_run_revision",
                         "labels": {"service_name": inputs["phases"][str(phase)]["deployed_name"]}},
            "severity": "INFO", "labels": {"pipeline": inputs["name"], "phase": str(phase), "date": "2025-01-15",
                                           "mode": mode}, "jsonPayload": {"message": message}}
