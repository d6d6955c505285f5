"""Structural tests of the Terraform deployment (infra/terraform), offline.

The Terraform registry is unreachable here, so ``terraform init/validate/plan`` cannot run. These
tests parse every ``.tf`` file with python-hcl2 and check the deployment's contract (DESIGN.md,
"Production deployment"): per phase a trigger topic, a dead-letter topic and its subscription, a
2nd-gen function reachable only internally, a push subscription with OIDC, a 600 s ack deadline,
10-600 s backoff and dead-lettering; run.invoker for the push identity; publisher only on the next
phase's topic; dataset-level dataEditor; and every phase of the generated inputs covered without a
Terraform edit.

The checks are ``problems(parsed_tf, inputs) -> list[str]`` so the negative tests can run them on
mutated copies and prove each check reports what it guards against.

Run with the dedicated venv (python-hcl2 conflicts with checkov's pinned parser)::

    .venv-hcl/bin/python -m pytest -q tests/test_terraform.py -p no:cacheprovider

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
        if ph["source_dir"] != f"functions/{ph['function']}":
            out.append(f"{where}: source_dir {ph['source_dir']} is not functions/{ph['function']}")
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
        if not _refs(sc.get("max_instance_count"), "var."):
            out.append(f"{where}: function {name} max_instance_count is not a variable")
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

    # ---- every variable is described; the timeout is capped
    for name, v in m["variable"].items():
        if not v.get("description"):
            out.append(f"{where}: variable {name} has no description")
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
        if _number(r, phase_call.get("max_delivery_attempts")) != 5:
            out.append(f"{where}: max_delivery_attempts does not default to 5")
        t = _number(r, phase_call.get("timeout_seconds"))
        var = re.fullmatch(r"\$\{var\.(\w+)\}", str(phase_call.get("timeout_seconds")))
        if t is None or t > MAX_FUNCTION_TIMEOUT or not (var and _validation_caps(r, var.group(1), MAX_FUNCTION_TIMEOUT)):
            out.append(f"{where}: the function timeout variable must default to <= {MAX_FUNCTION_TIMEOUT} and be validated")
        if not _refs(phase_call.get("write_datasets"), "each.value.writes_datasets"):
            out.append(f"{where}: module phase write_datasets do not come from the phase's inputs")
        if not _refs(phase_call.get("read_datasets"), "each.value.reads_datasets"):
            out.append(f"{where}: module phase read_datasets do not come from the phase's inputs")
        role = _compact(phase_call.get("bucket_role"))
        if not ("each.value.writes_export_bucket" in role and "each.value.reads_raw_bucket" in role):
            out.append(f"{where}: module phase bucket_role does not follow the phase's raw reads / exports")
        if not _refs(phase_call.get("source_object"), "[each.key]"):
            out.append(f"{where}: module phase source_object is not the phase's own zip")
    env = _compact(_resolve(r, (phase_call or {}).get("environment")))
    for key, want in (("CASCADE_PROJECT", "var.project_id"), ("CASCADE_PIPELINE_FILE", "var.pipeline.definition_file"),
                      ('CASCADE_PRODUCTION', '"1"')):
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
    for name, b in _resources(r, "google_storage_bucket").items():
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
        if "shared/" not in libs or "definition_file" not in libs:
            out.append(f"{where}: archive_file.{name} does not package shared/ and the pipeline definition")
        objects = [o for o in _resources(r, "google_storage_bucket_object").values()
                   if _refs(o.get("name"), f"data.archive_file.{name}[each.key].output_")]
        if not objects:
            out.append(f"{where}: no bucket object named after archive_file.{name}'s hash")

    for name, v in r["variable"].items():
        if not v.get("description"):
            out.append(f"{where}: variable {name} has no description")
    return out


# ====================================================================== fixtures
@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    return parse_all()


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    return committed_inputs()


def _main_python() -> Path:
    if not MAIN_PYTHON.exists():
        pytest.skip(f"{MAIN_PYTHON.relative_to(REPO)} is absent: create the main venv to regenerate the tfvars")
    return MAIN_PYTHON


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env["PYTHONPATH"] = str(REPO)
    return env


# ====================================================================== positive tests
def test_every_tf_file_parses() -> None:
    files = sorted(TF_ROOT.rglob("*.tf"))
    assert {p.name for p in files} >= {"versions.tf", "variables.tf", "main.tf", "outputs.tf"}
    for path in files:
        if ".terraform" in path.parts:
            continue
        with path.open() as fh:
            assert isinstance(hcl2.load(fh), dict), path


def test_committed_tfvars_match_the_pipeline_definition() -> None:
    proc = subprocess.run([str(_main_python()), "-m", "shared.tfvars"], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(TFVARS.read_text()), (
        "infra/terraform/pipeline.auto.tfvars.json is stale: run `python -m shared.tfvars --write`")


def test_deployment_has_no_problems(parsed: dict[str, Any], inputs: dict[str, Any]) -> None:
    assert problems(parsed, inputs) == []


def test_every_phase_is_deployed(parsed: dict[str, Any], inputs: dict[str, Any]) -> None:
    phases = inputs["phases"]
    assert {"2", "3", "4"} <= set(phases)
    first = min(phases, key=int)
    assert phases[first]["schedule"], "the first phase must have a daily schedule"
    last = [k for k, p in phases.items() if p["next"] is None]
    assert last and all(phases[k]["next_topic"] is None for k in last)
    for key, ph in phases.items():
        assert (REPO / ph["source_dir"] / "main.py").is_file(), f"phase {key} has no function source"


def test_new_phases_need_no_terraform_edit(parsed: dict[str, Any]) -> None:
    """A further phase (own schedule, default date today) added to the YAML changes inputs only."""
    script = r"""
import json, sys, yaml
from pathlib import Path
from shared.pipeline import from_dict
from shared.tfvars import terraform_inputs
raw = yaml.safe_load(Path("pipelines/nba.yaml").read_text())
last = next(p for p in raw["phases"] if p.get("next") is None)
last["next"] = 97
raw["phases"] += [
    {"number": 97, "name": "scoring", "title": "Scoring", "next": 98, "schedule": "30 10 * * *",
     "default_date": "today"},
    {"number": 98, "name": "archive", "title": "Archive"},
]
src = next(p for p in raw["processors"] if p["phase"] == last["number"])
raw["processors"] += [
    {"name": "scoring_out", "phase": 97, "upstreams": [src["name"]],
     "output": {"table": "nba_scoring.scoring_out", "date_column": "game_date",
                "keys": ["item_id"], "columns": {"game_date": "DATE", "item_id": "INT64", "score": "FLOAT64"}},
     "sql": "SELECT @data_date AS game_date, 1 AS item_id, 1.0 AS score"},
    {"name": "archive_out", "phase": 98, "upstreams": ["scoring_out"],
     "output": {"table": "nba_archive.archive_out", "date_column": "game_date",
                "keys": ["item_id"], "columns": {"game_date": "DATE", "item_id": "INT64", "score": "FLOAT64"}},
     "sql": "SELECT game_date, item_id, score FROM {nba_scoring.scoring_out}"},
]
print(json.dumps({"last": str(last["number"]), "inputs": terraform_inputs(from_dict(raw, "pipelines/nba.yaml"))}))
"""
    proc = subprocess.run([str(_main_python()), "-c", script], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    grown, last = out["inputs"], out["last"]
    assert {"97", "98"} <= set(grown["phases"])
    p97 = grown["phases"]["97"]
    assert p97["schedule"] == "30 10 * * *" and p97["default_date"] == "today" and p97["next_topic"] == "nba-phase98-archive"
    assert grown["phases"][last]["next_topic"] == "nba-phase97-scoring"
    assert grown["phases"]["98"]["reads_datasets"] == ["nba_scoring"]
    assert "nba_scoring" in grown["datasets"] and "nba_archive.archive_out" in grown["tables"]
    # The function folders do not exist: everything else about the new phases is in order.
    found = problems(parsed, grown)
    assert sorted(found) == [
        f"inputs: phase {n}: functions/{f}/main.py does not exist (no function source to deploy)"
        for n, f in (("97", "phase97_scoring"), ("98", "phase98_archive"))], found


# ====================================================================== negative tests
def _phase_resource(tf: dict[str, Any], rtype: str, pred) -> dict[str, Any]:
    return next(b for b in tf["resource"][rtype].values() if pred(b))


def _push_sub(tf: dict[str, Any]) -> dict[str, Any]:
    return _phase_resource(tf, "google_pubsub_subscription", lambda b: _block(b, "push_config"))


def _mutated(parsed: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(parsed)


def test_missing_dead_letter_policy_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    del _push_sub(bad["phase"])["dead_letter_policy"]
    assert any("has no dead_letter_policy" in p for p in problems(bad, inputs))


def test_missing_invoker_binding_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"].pop("google_cloud_run_v2_service_iam_member")
    assert any("roles/run.invoker" in p for p in problems(bad, inputs))


def test_invoker_for_the_wrong_identity_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    for b in bad["phase"]["resource"]["google_cloud_run_v2_service_iam_member"].values():
        b["member"] = "${google_service_account.function.member}"
    assert any("roles/run.invoker" in p for p in problems(bad, inputs))


def test_phase_without_resources_is_reported(parsed, inputs) -> None:
    """Per-phase modules written by hand (no for_each) leave a new phase of the JSON undeployed."""
    bad = _mutated(parsed)
    call = bad["root"]["module"].pop("phase")
    for key in inputs["phases"]:
        explicit = {k: v for k, v in call.items() if k != "for_each"}
        explicit["phase"] = f'${{var.pipeline.phases["{key}"]}}'
        bad["root"]["module"][f"phase{key}"] = explicit
    grown = copy.deepcopy(inputs)
    grown["phases"]["9"] = {**copy.deepcopy(inputs["phases"]["4"]), "number": 9, "topic": "nba-phase9-x",
                            "dead_letter_topic": "nba-phase9-x-dlq"}
    found = problems(bad, grown, source_root=None)
    assert any("phase 9 of the inputs has no phase module instance" in p for p in found), found
    assert not any("phase 4 of the inputs has no phase module instance" in p for p in found), found


def test_phase_module_over_a_subset_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["module"]["phase"]["for_each"] = '${{for k, p in var.pipeline.phases : k => p if k != "4"}}'
    assert any("phase 4 of the inputs has no phase module instance" in p for p in problems(bad, inputs))


def test_phase_without_function_source_is_reported(parsed, inputs) -> None:
    grown = copy.deepcopy(inputs)
    grown["phases"]["9"] = {**copy.deepcopy(inputs["phases"]["4"]), "number": 9, "function": "phase9_missing",
                            "source_dir": "functions/phase9_missing", "topic": "nba-phase9-missing",
                            "dead_letter_topic": "nba-phase9-missing-dlq"}
    assert any("phase9_missing/main.py does not exist" in p for p in problems(parsed, grown))


def test_phase_missing_fields_is_reported(parsed, inputs) -> None:
    grown = copy.deepcopy(inputs)
    grown["phases"]["9"] = {"number": 9, "name": "unfinished"}
    assert any(p.startswith("inputs: phase 9 lacks") for p in problems(parsed, grown))


def test_wrong_ack_deadline_retry_and_oidc_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    sub = _push_sub(bad["phase"])
    sub["ack_deadline_seconds"] = 60
    sub["retry_policy"][0]["minimum_backoff"] = "1s"
    del sub["push_config"][0]["oidc_token"]
    found = problems(bad, inputs)
    assert any("ack_deadline_seconds is 60" in p for p in found)
    assert any("minimum_backoff" in p for p in found)
    assert any("has no oidc_token" in p for p in found)


def test_backoff_defaults_are_checked(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["variable"]["max_retry_backoff_seconds"]["default"] = 60
    assert any("max_retry_backoff_seconds defaults to 60" in p for p in problems(bad, inputs))


def test_missing_dead_letter_topic_or_subscription_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_pubsub_subscription"] = {
        n: b for n, b in bad["phase"]["resource"]["google_pubsub_subscription"].items() if _block(b, "push_config")}
    assert any("no subscription on the dead-letter topic" in p for p in problems(bad, inputs))
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_pubsub_topic"].pop("dead_letter")
    found = problems(bad, inputs)
    assert any("no dead-letter topic" in p for p in found)
    assert any("dead_letter_policy does not point at the dead-letter topic" in p for p in found)


def test_short_dead_letter_retention_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["variable"]["dead_letter_retention"]["default"] = 3600
    assert any("want 7 days" in p for p in problems(bad, inputs))


def test_public_ingress_event_trigger_and_long_timeout_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    fn = next(iter(bad["phase"]["resource"]["google_cloudfunctions2_function"].values()))
    fn["service_config"][0]["ingress_settings"] = "ALLOW_ALL"
    fn["event_trigger"] = [{"event_type": "google.cloud.pubsub.topic.v1.messagePublished"}]
    bad["root"]["variable"]["function_timeout_seconds"]["default"] = 900
    bad["phase"]["variable"]["timeout_seconds"]["validation"] = []
    found = problems(bad, inputs)
    assert any("not ALLOW_INTERNAL_ONLY" in p for p in found)
    assert any("event_trigger" in p for p in found)
    assert any("timeout variable must default to <= 540" in p for p in found)
    assert any("is not bounded by 540" in p for p in found)


def test_publisher_beyond_the_next_topic_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_pubsub_topic_iam_member"]["own_topic"] = {
        "topic": "${google_pubsub_topic.trigger.name}", "role": "roles/pubsub.publisher",
        "member": "${google_service_account.function.member}"}
    bad["root"]["resource"]["google_project_iam_member"]["everything"] = {
        "role": "roles/pubsub.publisher", "member": '${module.phase["2"].service_account_member}'}
    found = problems(bad, inputs)
    assert any("other than the Pub/Sub service agent" in p for p in found)
    assert any("roles/pubsub.publisher project-wide" in p for p in found)
    bad = _mutated(parsed)
    bad["root"]["resource"]["google_pubsub_topic_iam_member"].pop("next_phase_publisher")
    assert any("next phase's topic" in p for p in problems(bad, inputs))


def test_project_level_data_editor_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"].pop("google_bigquery_dataset_iam_member")
    bad["phase"]["resource"]["google_project_iam_member"]["editor"] = {
        "project": "${var.project_id}", "role": "roles/bigquery.dataEditor",
        "member": "${google_service_account.function.member}"}
    found = problems(bad, inputs)
    assert any("no dataset-level roles/bigquery.dataEditor" in p for p in found)
    assert any("unexpected project-level roles" in p for p in found)


def test_missing_service_agent_grants_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"].pop("google_pubsub_subscription_iam_member")
    bad["phase"]["resource"]["google_pubsub_topic_iam_member"] = {}
    found = problems(bad, inputs)
    assert any("cannot publish to the dead-letter topic" in p for p in found)
    assert any("not a subscriber of the push subscription" in p for p in found)


def test_scheduler_with_a_date_or_wrong_zone_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    job = bad["root"]["resource"]["google_cloud_scheduler_job"]["phase"]
    job["time_zone"] = "UTC"
    job["pubsub_target"][0]["data"] = '${base64encode(jsonencode({pipeline = var.pipeline.name, phase = each.value.number, data_date = "2025-01-01"}))}'
    found = problems(bad, inputs)
    assert any("must not carry a date" in p for p in found)
    assert any("scheduled phase 2 has no Cloud Scheduler job" in p for p in found)


def test_unpinned_provider_and_unnamed_source_object_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["terraform"][0]["required_providers"][0]["google"]["version"] = "~> 6.0"
    for o in bad["root"]["resource"]["google_storage_bucket_object"].values():
        o["name"] = "${each.value.function}/source.zip"
    found = problems(bad, inputs)
    assert any("provider google is not pinned exactly" in p for p in found)
    assert any("hash" in p for p in found)


def test_stale_inputs_are_reported(inputs) -> None:
    bad = copy.deepcopy(inputs)
    bad["phases"]["2"]["next_topic"] = "nba-phase9-nowhere"
    bad["tables"]["nba_raw.nbac_schedule"]["clustering"] = ["game_date"]
    found = input_problems(bad)
    assert any("next_topic" in p for p in found)
    assert any("clustering" in p for p in found)
