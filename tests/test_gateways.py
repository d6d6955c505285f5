"""Each backend is reached through its gateway, checked from the code itself (no emulator).

* BigQuery: only the warehouse (``shared/runtime/warehouse/``) imports the client library, calls a
  BigQuery client and holds SQL text; the client factory (``shared/runtime/clients.py``) builds the client.
* Firestore: only the state tracker (``shared/state/``) imports the client library.
* Pub/Sub and Cloud Storage: only the client factory imports the client libraries; the tables below
  name every module that builds a client, calls a Pub/Sub client, or handles buckets and blobs.

A module that needs a backend somewhere new either asks its gateway for a named method or is added
to a table here, on purpose, in the same change. Each table entry (a file, or a folder ending in
"/") must still be used, so the tables do not outgrow the code.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

from .harness import ROOT

LIB = ROOT / "shared"
# What ships in the functions beside the library: its entry points.
ENTRY_POINTS = sorted((ROOT / "functions").glob("*/main.py"))

# Backend -> the files (or folders, ending in "/") that may import its Google Cloud client library.
IMPORTS_ALLOWED = {
    "bigquery": ("shared/runtime/warehouse/", "shared/runtime/clients.py"),
    "firestore": ("shared/state/", "shared/runtime/clients.py"),
    "pubsub": ("shared/runtime/clients.py",),
    "storage": ("shared/runtime/clients.py",),
}
# Module of ``google.cloud`` -> the backend it talks to.
_LIBRARY = {"bigquery": "bigquery", "bigquery_storage": "bigquery", "firestore": "firestore",
            "firestore_v1": "firestore", "pubsub": "pubsub", "pubsub_v1": "pubsub", "storage": "storage"}

# Client factory (``shared/runtime/clients.py``) -> the modules that build that client. The App (the
# functions' composition root) builds one of each and hands it to its gateway; the local tooling
# (``dev/``) builds its own to provision the stack; lint and ``cascade test`` build a BigQuery client
# for a Warehouse over the local engine; the dead-letter tooling pulls with a subscriber.
FACTORY_CALLERS = {
    "bigquery": ("shared/runtime/app.py", "shared/dev/", "shared/lint/live.py", "shared/cli/test_cmds.py"),
    "firestore": ("shared/runtime/app.py",),
    "publisher": ("shared/runtime/app.py", "shared/dev/"),
    "subscriber": ("shared/dev/", "shared/ops/deadletters.py"),
    "storage": ("shared/runtime/app.py", "shared/dev/"),
}

# Methods only a BigQuery client has (``client.query`` included: other modules ask the warehouse).
BIGQUERY_CALLS = {"query", "get_table", "create_table", "update_table", "delete_table", "create_dataset",
                  "delete_dataset", "get_job", "cancel_job", "list_rows", "list_tables", "insert_rows",
                  "insert_rows_json", "load_table_from_file", "load_table_from_json", "load_table_from_uri",
                  "extract_table", "copy_table"}
# Methods only a Pub/Sub publisher or subscriber client has -> the modules that call them: the
# publisher gateway, the local stack's provisioning and the dead-letter tooling.
PUBSUB_CALLS = {"topic_path", "subscription_path", "create_topic", "delete_topic", "get_topic",
                "create_subscription", "delete_subscription", "modify_push_config", "pull", "streaming_pull",
                "acknowledge", "modify_ack_deadline"}
PUBSUB_ALLOWED = ("shared/runtime/publisher.py", "shared/dev/", "shared/ops/deadletters.py")
# Methods only a Cloud Storage client, bucket or blob has, and the ``storage`` client of the App or
# of a processor's RunContext -> the modules that use them: the GCS processors (raw loads read, exports
# publish), the runner handing the client to a processor, the backfill's raw-file coverage, the
# Phase 1 stand-in of the daily replay, and the local tooling (the bucket, the synthetic files).
STORAGE_CALLS = {"list_blobs", "get_blob", "blob", "lookup_bucket", "get_bucket", "create_bucket",
                 "delete_blob", "delete_blobs", "upload_from_string", "upload_from_file", "upload_from_filename",
                 "download_to_file", "download_to_filename", "download_as_bytes", "download_as_text"}
STORAGE_ALLOWED = ("shared/runtime/processors/gcs_load.py", "shared/runtime/processors/gcs_export.py",
                   "shared/runtime/runner.py", "shared/backfill/validate.py", "shared/ops/daily.py", "shared/dev/")

# SQL text may live only in the warehouse; lint/ holds the analyzer's hints about SQL, and the
# definition only describes the SQL a user writes (its docs and messages).
SQL_ALLOWED = ("shared/runtime/warehouse/", "shared/lint/")
# Text of a statement or of a piece of one, in capitals as the warehouse writes them: SELECT ... FROM,
# MERGE `t`, INSERT INTO, DELETE FROM, DDL, GROUP BY, a parameter compared (``= @d``, ``BETWEEN @start``),
# a rendered column tested for NULL (``{c} IS NULL``), COUNTIF(. Prose about SQL ("the SELECT's
# columns", "MERGE keys") does not match.
SQL_TEXT = re.compile(
    r"\bSELECT\b.*\bFROM\b|\bMERGE\s+[`{]|\bINSERT\s+INTO\b|\bDELETE\s+FROM\b|\bUPDATE\s+[`{]\S*\s+SET\b|"
    r"\b(?:ALTER|DROP|TRUNCATE)\s+TABLE\b|\bCREATE\s+(?:OR\s+REPLACE\s+)?TABLE\b|\bGROUP\s+BY\b|"
    r"\bBETWEEN\s+@|[=<>]\s*@\w|\{\}\s+IS\s+(?:NOT\s+)?NULL\b|\bCOUNTIF\(", re.DOTALL)


def _files() -> list[Path]:
    return sorted(LIB.rglob("*.py")) + ENTRY_POINTS


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _matches(rel: str, entry: str) -> bool:
    return rel == entry or (entry.endswith("/") and rel.startswith(entry))


def _allowed(rel: str, allowed: tuple[str, ...]) -> bool:
    return any(_matches(rel, a) for a in allowed)


def _check_table(found: set[str], allowed: tuple[str, ...], what: str) -> None:
    """Every module in ``found`` is allowed, and every entry of ``allowed`` is still used."""
    assert sorted(f for f in found if not _allowed(f, allowed)) == [], f"{what} outside {allowed}"
    assert [a for a in allowed if not any(_matches(f, a) for f in found)] == [], f"unused entries for {what}"


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _google_backends(tree: ast.Module) -> set[str]:
    """The backends whose ``google.cloud`` client library a module imports (at the top or in a function)."""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules |= {f"{node.module}.{a.name}" for a in node.names}
    out = set()
    for m in modules:
        parts = m.split(".")
        if parts[:2] == ["google", "cloud"] and len(parts) > 2 and parts[2] in _LIBRARY:
            out.add(_LIBRARY[parts[2]])
    return out


def _calls(tree: ast.Module) -> list[tuple[str, str]]:
    """Every method call of a module as (receiver text, method name)."""
    return [(ast.unparse(n.func.value), n.func.attr) for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]


def _strings(tree: ast.Module) -> list[tuple[int, str]]:
    """The module's string literals and f-string texts (docstrings left out), with their line."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings \
                and id(n) not in inside_fstrings:
            out.append((n.lineno, n.value))
        elif isinstance(n, ast.JoinedStr):
            out.append((n.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values)))
    return out


@pytest.mark.parametrize("backend", sorted(IMPORTS_ALLOWED))
def test_a_backend_client_library_is_imported_only_by_its_gateway(backend):
    offenders = [_rel(p) for p in _files()
                 if backend in _google_backends(_tree(p)) and not _allowed(_rel(p), IMPORTS_ALLOWED[backend])]
    assert offenders == [], f"{backend} is imported outside {IMPORTS_ALLOWED[backend]}"


@pytest.mark.parametrize("factory", sorted(FACTORY_CALLERS))
def test_clients_are_built_only_where_the_table_says(factory):
    found: dict[str, set[str]] = {name: set() for name in FACTORY_CALLERS}
    for path in _files():
        tree = _tree(path)
        from_factory = {a.asname or a.name for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and n.module == "cascade.runtime.clients" for a in n.names}
        for receiver, method in _calls(tree):
            if receiver == "clients" and method in found:
                found[method].add(_rel(path))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in from_factory:
                found.setdefault(n.func.id, set()).add(_rel(path))
    _check_table(found[factory], FACTORY_CALLERS[factory], f"clients.{factory}()")


def test_only_the_warehouse_calls_a_bigquery_client():
    offenders = {f"{_rel(p)}: {recv}.{method}()" for p in _files() for recv, method in _calls(_tree(p))
                 if method in BIGQUERY_CALLS and re.search(r"(^|[._])client$", recv)
                 and not _allowed(_rel(p), IMPORTS_ALLOWED["bigquery"])}
    assert offenders == set()


def test_pubsub_clients_are_called_only_by_the_publisher_the_local_stack_and_the_dead_letter_tooling():
    callers = {_rel(p) for p in _files() if any(m in PUBSUB_CALLS for _, m in _calls(_tree(p)))}
    _check_table(callers, PUBSUB_ALLOWED, "a Pub/Sub client call")


def test_buckets_and_blobs_are_handled_only_where_the_table_says():
    users = set()
    for path in _files():
        tree = _tree(path)
        storage_attr = any(isinstance(n, ast.Attribute) and n.attr == "storage"
                           and ast.unparse(n.value) != "clients" for n in ast.walk(tree))
        if storage_attr or any(m in STORAGE_CALLS for _, m in _calls(tree)):
            users.add(_rel(path))
    _check_table(users, STORAGE_ALLOWED, "a bucket, a blob or the storage client")


def test_no_sql_text_outside_the_warehouse():
    offenders = [f"{_rel(p)}:{line}: {text.strip()[:70]!r}" for p in _files() if not _allowed(_rel(p), SQL_ALLOWED)
                 for line, text in _strings(_tree(p)) if SQL_TEXT.search(text)]
    assert offenders == []


def test_the_sql_check_finds_the_warehouse_s_own_statements():
    found = {_rel(p) for p in _files() for _, text in _strings(_tree(p)) if SQL_TEXT.search(text)}
    assert {"shared/runtime/warehouse/base.py", "shared/runtime/warehouse/sql.py"} <= found


@pytest.mark.parametrize("text", [
    "SELECT k, n FROM `{}`", "SELECT * FROM (\n{}\n) AS x", "SELECT {} FROM t", "MERGE `{}` AS T",
    "DELETE FROM `{}` WHERE TRUE", "INSERT INTO `{}` (a) VALUES (1)", "ALTER TABLE `{}` ADD COLUMN c INT64",
    "SELECT DISTINCT {} AS d FROM `{}`", "x WHERE {} BETWEEN @start AND @end",
])
def test_the_sql_check_recognizes_statements_the_warehouse_sends(text):
    assert SQL_TEXT.search(text)


@pytest.mark.parametrize("text", [
    "a SELECT returning the offending rows", "the SELECT's columns", "MERGE keys within a date partition.",
    "re-run the SELECT once fixed", "select a processor", "cascade backfill --start {} --end {}",
])
def test_the_sql_check_lets_prose_about_sql_pass(text):
    assert not SQL_TEXT.search(text)
