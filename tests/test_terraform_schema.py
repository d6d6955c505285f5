"""Every ``.tf`` file of infra/terraform (modules included) checked against the Google provider's own
schema, offline.

The schema is infra/provider-schema/google-<version>.json, extracted from the provider's published
bindings by infra/provider_schema.py (``make provider-schema``) for exactly the types the
configuration uses. The check reports, with file, line, resource, argument and the closest valid
name:

* a resource or data-source type the provider does not have (or only google-beta has), or one the
  trimmed schema lacks (regenerate it);
* an unknown argument or nested block, a computed-only attribute set, a required argument or block
  missing;
* a nested block written as an attribute (``x = {...}``) or an argument written as a block;
* a single block (at most one) written more than once;
* a reference ``google_x.name.attr`` (or ``data.google_x...``, through nested blocks as in
  ``service_config[0].uri``) to an attribute the type does not have, or to a resource not declared.

Meta-arguments (count, for_each, depends_on, provider, lifecycle, provisioner, connection) and
``dynamic`` blocks are understood. Not checked (the schema does not carry them): conflicting
arguments, exactly-one-of groups, enum values, value types.

It also owns the rule that every BigQuery table is protected against a replacement that would drop
its data (deletion_protection = true and lifecycle prevent_destroy; docs/deploy.md).

Runs in .venv-hcl (python-hcl2) from infra/check.sh, with --noconftest; it imports nothing of the
project's runtime.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 lives in .venv-hcl (see infra/check.sh)")

REPO = Path(__file__).resolve().parent.parent
TF_ROOT = REPO / "infra" / "terraform"
SCHEMA_DIR = REPO / "infra" / "provider-schema"

META_ARGUMENTS = {
    "resource": {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"},
    "data": {"count", "for_each", "depends_on", "provider", "lifecycle"},
}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
LIFECYCLE = {"create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by",
             "precondition", "postcondition"}
DYNAMIC = {"for_each", "iterator", "labels", "content"}


# ====================================================================== schema
def load_schema() -> dict[str, Any]:
    files = sorted(SCHEMA_DIR.glob("google-*.json"))
    assert len(files) == 1, f"expected one infra/provider-schema/google-<version>.json, found {files}"
    return json.loads(files[0].read_text())


# ====================================================================== parsing helpers
def _unquote(s: Any) -> Any:
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def _is_block(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _items(body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for k, v in body.items():
        if not k.startswith("__"):
            yield k, v


def _closest(name: str, candidates: set[str] | list[str]) -> str:
    found = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{found[0]}"?)' if found else ""


def _provider(body: dict[str, Any]) -> str:
    value = str(_unquote(body.get("provider", "google")))
    return value.removeprefix("${").removesuffix("}").split(".")[0]


class Source:
    """One .tf file's text, for line numbers (python-hcl2 8 reports none for attributes)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.lines = text.splitlines()

    def block_line(self, kind: str, rtype: str, name: str) -> int:
        pat = re.compile(rf'^\s*{kind}\s+"{re.escape(rtype)}"\s+"{re.escape(name)}"')
        return next((i for i, line in enumerate(self.lines, 1) if pat.match(line)), 0)

    def key_line(self, after: int, key: str) -> int:
        """First line at or after ``after`` that sets ``key`` or opens a ``key``/``dynamic "key"`` block."""
        pat = re.compile(rf'^\s*(?:{re.escape(key)}\s*[={{]|dynamic\s+"{re.escape(key)}")')
        return next((i for i, line in enumerate(self.lines, 1) if i >= after and pat.match(line)), after)

    def text_line(self, needle: str) -> int:
        return next((i for i, line in enumerate(self.lines, 1) if needle in line), 0)

    def at(self, line: int) -> str:
        return f"{self.name}:{line}" if line else self.name


# ====================================================================== the checker
class Checker:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.version = schema["provider_version"]
        self.problems: list[str] = []

    # ---------------------------------------------------------------- types
    def type_schema(self, src: Source, line: int, kind: str, rtype: str, provider: str, label: str) -> dict | None:
        providers = self.schema["providers"]
        section = providers.get(provider)
        noun = "resource type" if kind == "resource" else "data source"
        if section and rtype in section[kind]:
            return section[kind][rtype]
        ga = providers.get("google", {}).get("all_types", {}).get(kind, [])
        beta_only = providers.get("google-beta", {}).get("all_types", {}).get(kind, [])
        where = f"{src.at(line)}: {label}"
        if provider == "google" and rtype in beta_only:
            self.problems.append(f"{where}: {noun} {rtype} exists only in google-beta {self.version}: "
                                 f"add provider = google-beta")
        elif rtype in ga or rtype in beta_only:
            self.problems.append(f"{where}: {noun} {rtype} ({provider}) is missing from the trimmed schema "
                                 f"infra/provider-schema/google-{self.version}.json: run make provider-schema")
        else:
            self.problems.append(f"{where}: unknown {noun} {rtype} in hashicorp/{provider} {self.version}"
                                 f"{_closest(rtype, set(ga) | set(beta_only))}")
        return None

    # ---------------------------------------------------------------- bodies
    def body(self, src: Source, line: int, label: str, body: dict[str, Any], spec: dict[str, Any],
             meta: set[str] = frozenset(), path: str = "") -> None:
        arguments: dict[str, str] = spec.get("arguments", {})
        blocks: dict[str, Any] = spec.get("blocks", {})
        computed = set(spec.get("computed", []))
        valid = set(arguments) | set(blocks)
        present: set[str] = set()
        for key, value in _items(body):
            kline = src.key_line(line, key)
            where = f"{src.at(kline)}: {label}"
            if key in meta:
                self.meta(src, kline, label, key, value)
                continue
            if key == "dynamic" and isinstance(value, list):
                for dyn in value:
                    for dname, dbody in _items(dyn):
                        dname = _unquote(dname)
                        dline = src.key_line(line, dname)
                        present.add(dname)
                        if dname not in blocks:
                            what = "an argument, not a block" if dname in arguments else "not a nested block"
                            self.problems.append(f"{src.at(dline)}: {label}: dynamic \"{path}{dname}\" is {what}"
                                                 f"{_closest(dname, set(blocks)) if dname not in arguments else ''}")
                            continue
                        for k, _ in _items(dbody):
                            if k not in DYNAMIC:
                                self.problems.append(f"{src.at(dline)}: {label}: dynamic \"{path}{dname}\" has "
                                                     f"unknown argument {k}{_closest(k, DYNAMIC)}")
                        for content in dbody.get("content") or []:
                            self.body(src, dline, label, content, blocks[dname], path=f"{path}{dname}.")
                continue
            present.add(key)
            if key in arguments:
                if _is_block(value):
                    self.problems.append(f"{where}: {path}{key} is an argument, written as a block: "
                                         f"write {key} = ...")
            elif key in blocks:
                if not _is_block(value):
                    self.problems.append(f"{where}: {path}{key} is a nested block, written as an argument: "
                                         f"write {key} {{ ... }}")
                    continue
                if blocks[key]["nesting"] == "single" and len(value) > 1:
                    self.problems.append(f"{where}: {path}{key} is a single block, written {len(value)} times")
                for item in value:
                    self.body(src, kline, label, item, blocks[key], path=f"{path}{key}.")
            elif key in computed:
                self.problems.append(f"{where}: {path}{key} is computed by the provider and cannot be set")
            else:
                kind = "nested block" if _is_block(value) else "argument"
                self.problems.append(f"{where}: unknown {kind} {path}{key}{_closest(key, valid)}")
        for name, need in arguments.items():
            if need == "required" and name not in present:
                self.problems.append(f"{src.at(line)}: {label}: required argument {path}{name} is missing")
        for name, blk in blocks.items():
            if blk.get("required") and name not in present:
                self.problems.append(f"{src.at(line)}: {label}: required block {path}{name} is missing")

    def meta(self, src: Source, line: int, label: str, key: str, value: Any) -> None:
        where = f"{src.at(line)}: {label}"
        if key in META_BLOCKS and not _is_block(value):
            self.problems.append(f"{where}: {key} is a block, written as an argument: write {key} {{ ... }}")
        elif key not in META_BLOCKS and _is_block(value):
            self.problems.append(f"{where}: {key} is an argument, written as a block: write {key} = ...")
        elif key == "lifecycle":
            if len(value) > 1:
                self.problems.append(f"{where}: lifecycle is a single block, written {len(value)} times")
            for item in value:
                for k, _ in _items(item):
                    if k not in LIFECYCLE:
                        self.problems.append(f"{where}: unknown lifecycle argument {k}{_closest(k, LIFECYCLE)}")

    # ---------------------------------------------------------------- references
    _REF = re.compile(r"(?<![\w.\-])(?:(data)\.)?(google_\w+)\.([A-Za-z_][\w-]*)((?:\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]|\.[A-Za-z_]\w*)*)")

    def references(self, src: Source, strings: list[str], declared: dict[tuple[str, str], set[str]],
                   specs: dict[tuple[str, str, str], dict | None]) -> None:
        for s in strings:
            if "${" not in s:
                continue
            for m in self._REF.finditer(s):
                kind = "data" if m.group(1) else "resource"
                rtype, name, tail = m.group(2), m.group(3), m.group(4)
                ref = m.group(0)
                where = f"{src.at(src.text_line(ref) or src.text_line(f'{rtype}.{name}'))}: reference {ref}"
                if name not in declared.get((kind, rtype), set()):
                    self.problems.append(f"{where}: no {kind} {rtype}.{name} in this module"
                                         f"{_closest(name, declared.get((kind, rtype), set()))}")
                    continue
                spec = next((v for (k, t, _), v in specs.items() if (k, t) == (kind, rtype) and v), None)
                attrs = re.findall(r"\.([A-Za-z_]\w*)", re.sub(r"\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]", "", tail))
                self.attribute_path(where, rtype, spec, attrs)

    def attribute_path(self, where: str, rtype: str, spec: dict | None, attrs: list[str]) -> None:
        path = rtype
        for attr in attrs:
            if spec is None:
                return
            arguments, blocks = spec.get("arguments", {}), spec.get("blocks", {})
            names = set(arguments) | set(blocks) | set(spec.get("computed", [])) | ({"id"} if path == rtype else set())
            if attr not in names:
                self.problems.append(f"{where}: {path} has no attribute {attr}{_closest(attr, names)}")
                return
            if attr not in blocks:
                return  # an attribute (maps, lists and objects are not described further)
            spec, path = blocks[attr], f"{path}.{attr}"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def check_module(files: dict[str, str], schema: dict[str, Any]) -> list[str]:
    """Problems of one Terraform module given as {file name: text}."""
    checker = Checker(schema)
    parsed = {name: hcl2.loads(text) for name, text in files.items()}
    declared: dict[tuple[str, str], set[str]] = {}
    for raw in parsed.values():
        for kind in ("resource", "data"):
            for entry in raw.get(kind, []):
                for rtype, named in _items(entry):
                    for name in named:
                        declared.setdefault((kind, _unquote(rtype)), set()).add(_unquote(name))
    specs: dict[tuple[str, str, str], dict | None] = {}
    for fname, raw in parsed.items():
        src = Source(fname, files[fname])
        for kind in ("resource", "data"):
            for entry in raw.get(kind, []):
                for rtype, named in _items(entry):
                    rtype = _unquote(rtype)
                    if not rtype.startswith("google_"):
                        continue  # other providers (archive) are not described by this schema
                    for name, body in _items(named):
                        name = _unquote(name)
                        line = src.block_line(kind, rtype, name)
                        label = f"{'data.' if kind == 'data' else ''}{rtype}.{name}"
                        spec = checker.type_schema(src, line, kind, rtype, _provider(body), label)
                        specs[(kind, rtype, name)] = spec
                        if spec is not None:
                            checker.body(src, line, label, body, spec, meta=META_ARGUMENTS[kind])
    for fname, raw in parsed.items():
        checker.references(Source(fname, files[fname]), list(_strings(raw)), declared, specs)
    return checker.problems


def modules() -> dict[str, dict[str, str]]:
    """{module dir (repo-relative): {file path (repo-relative): text}} of every module under infra/terraform."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(TF_ROOT.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        out.setdefault(str(path.parent.relative_to(REPO)), {})[str(path.relative_to(REPO))] = path.read_text()
    return out


def used_types() -> set[tuple[str, str, str]]:
    """(provider, kind, type) of every google resource and data source of the configuration."""
    out = set()
    for files in modules().values():
        for text in files.values():
            raw = hcl2.loads(text)
            for kind in ("resource", "data"):
                for entry in raw.get(kind, []):
                    for rtype, named in _items(entry):
                        if _unquote(rtype).startswith("google_"):
                            out |= {(_provider(b), kind, _unquote(rtype)) for _, b in _items(named)}
    return out


def coverage_problems(schema: dict[str, Any], used: set[tuple[str, str, str]]) -> list[str]:
    out = []
    for provider, kind, rtype in sorted(used):
        if rtype not in schema["providers"].get(provider, {}).get(kind, {}):
            out.append(f"{kind} {rtype} ({provider}) is used but missing from the trimmed schema "
                       f"google-{schema['provider_version']}.json: run make provider-schema")
    return out


def pin_problems(schema: dict[str, Any]) -> list[str]:
    out = []
    want = schema["provider_version"]
    for files in modules().values():
        for fname, text in files.items():
            for entry in hcl2.loads(text).get("terraform", []):
                for rp in entry.get("required_providers", []):
                    for provider, req in _items(rp):
                        if provider in ("google", "google-beta"):
                            version = str(_unquote(req.get("version", ""))).replace(" ", "")
                            if version != f"={want}":
                                out.append(f"{fname}: provider {provider} is pinned {version or 'nowhere'}, "
                                           f"the schema is of {want} (= {want})")
    return out


# ====================================================================== table protection
def table_problems(files: dict[str, str]) -> list[str]:
    """Every google_bigquery_table: deletion_protection = true and lifecycle prevent_destroy = true,
    and no lifecycle rule that would hide or force a schema change."""
    out = []
    for fname, text in files.items():
        for entry in hcl2.loads(text).get("resource", []):
            for name, body in _items(entry.get('"google_bigquery_table"', {})):
                label = f"{fname}: google_bigquery_table.{_unquote(name)}"
                if body.get("deletion_protection") is not True:
                    out.append(f"{label}: deletion_protection must be true (literally), not "
                               f"{body.get('deletion_protection')!r}")
                lifecycle = (body.get("lifecycle") or [{}])[0]
                if lifecycle.get("prevent_destroy") is not True:
                    out.append(f"{label}: lifecycle prevent_destroy = true is missing (a replacement would "
                               f"drop the table's data)")
                if "schema" in str(lifecycle.get("ignore_changes", "")) or "all" in str(lifecycle.get("ignore_changes", "")):
                    out.append(f"{label}: lifecycle ignore_changes hides schema changes")
                if lifecycle.get("replace_triggered_by") is not None:
                    out.append(f"{label}: lifecycle replace_triggered_by would replace the table")
    return out


# ====================================================================== the configuration
@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema()


def test_the_schema_is_of_the_pinned_provider(schema) -> None:
    assert pin_problems(schema) == []
    assert schema["providers"]["google"]["package"].startswith("cdktn-provider-google==")


def test_the_trimmed_schema_covers_every_type_the_configuration_uses(schema) -> None:
    used = used_types()
    assert ("google", "resource", "google_bigquery_table") in used
    assert coverage_problems(schema, used) == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_the_configuration_matches_the_provider_schema(schema, module) -> None:
    problems = check_module(modules()[module], schema)
    assert problems == [], "\n".join(problems)


def test_every_bigquery_table_is_protected_against_replacement() -> None:
    files = {f: t for m in modules().values() for f, t in m.items()}
    assert any("google_bigquery_table" in t for t in files.values())
    assert table_problems(files) == []


# ====================================================================== the checker can fail
TABLE = '''
resource "google_bigquery_table" "t" {
  dataset_id          = "d"
  table_id            = "t"
  deletion_protection = true
  schema              = jsonencode([])

  time_partitioning {
    type  = "DAY"
    field = "game_date"
  }

  lifecycle {
    prevent_destroy = true
  }
}
'''


def _check(schema: dict[str, Any], text: str) -> list[str]:
    return check_module({"broken.tf": text}, schema)


def _one(problems: list[str], *needles: str) -> str:
    hits = [p for p in problems if all(n in p for n in needles)]
    assert hits, f"no problem with {needles} in:\n" + "\n".join(problems)
    return hits[0]


def test_a_valid_table_passes(schema) -> None:
    assert _check(schema, TABLE) == []
    assert table_problems({"t.tf": TABLE}) == []


def test_a_misspelt_argument_is_reported_with_the_right_name(schema) -> None:
    p = _one(_check(schema, TABLE.replace("deletion_protection", "deletion_protecton")), "deletion_protecton")
    assert p.startswith("broken.tf:5: google_bigquery_table.t: unknown argument")
    assert 'did you mean "deletion_protection"' in p


def test_a_misspelt_nested_argument_is_reported(schema) -> None:
    p = _one(_check(schema, TABLE.replace("field =", "feild =")), "time_partitioning.feild")
    assert 'did you mean "field"' in p and p.startswith("broken.tf:10:")


def test_a_missing_required_argument_is_reported(schema) -> None:
    p = _one(_check(schema, TABLE.replace('  table_id            = "t"\n', "")), "required argument table_id")
    assert p.startswith("broken.tf:2: google_bigquery_table.t")
    nested = _check(schema, TABLE.replace('    type  = "DAY"\n', ""))
    _one(nested, "required argument time_partitioning.type")


def test_a_block_written_as_an_attribute_and_the_reverse_are_reported(schema) -> None:
    as_attr = TABLE.replace("time_partitioning {", "time_partitioning = {")
    _one(_check(schema, as_attr), "time_partitioning is a nested block, written as an argument")
    as_block = TABLE.replace('schema              = jsonencode([])', 'schema {\n    x = 1\n  }')
    _one(_check(schema, as_block), "schema is an argument, written as a block")
    lifecycle = TABLE.replace("lifecycle {", "lifecycle = {")
    _one(_check(schema, lifecycle), "lifecycle is a block, written as an argument")


def test_a_repeated_single_block_is_reported(schema) -> None:
    twice = TABLE.replace("  lifecycle {", '  time_partitioning {\n    type = "DAY"\n  }\n\n  lifecycle {')
    _one(_check(schema, twice), "time_partitioning is a single block, written 2 times")


def test_unknown_types_beta_only_types_and_types_missing_from_the_schema_are_reported(schema) -> None:
    p = _one(_check(schema, TABLE.replace("google_bigquery_table", "google_bigquery_tabel")), "unknown resource type")
    assert 'did you mean "google_bigquery_table"' in p
    beta = 'resource "google_project_service_identity" "p" {\n  service = "pubsub.googleapis.com"\n}\n'
    _one(_check(schema, beta), "exists only in google-beta", "add provider = google-beta")
    assert _check(schema, beta.replace("{\n", "{\n  provider = google-beta\n", 1)) == []
    routine = 'resource "google_bigquery_routine" "r" {\n  dataset_id = "d"\n}\n'
    _one(_check(schema, routine), "missing from the trimmed schema", "make provider-schema")
    data = 'data "google_projekt" "p" {}\n'
    assert 'did you mean "google_project"' in _one(_check(schema, data), "unknown data source")


def test_a_bad_attribute_reference_is_reported(schema) -> None:
    refs = TABLE + '''
output "a" {
  value = google_bigquery_table.t.self_lnk
}

output "b" {
  value = "${google_bigquery_table.t.time_partitioning[0].feild}/x"
}

output "c" {
  value = google_bigquery_table.u.id
}

output "ok" {
  value = [google_bigquery_table.t.self_link, google_bigquery_table.t.time_partitioning[0].field, google_bigquery_table.t.id]
}
'''
    problems = _check(schema, refs)
    p = _one(problems, "google_bigquery_table has no attribute self_lnk")
    assert 'did you mean "self_link"' in p and p.startswith("broken.tf:19:")
    _one(problems, "google_bigquery_table.time_partitioning has no attribute feild", 'did you mean "field"')
    _one(problems, "no resource google_bigquery_table.u in this module")
    assert len(problems) == 3, problems


def test_computed_attributes_cannot_be_set_and_dynamic_blocks_are_checked(schema) -> None:
    _one(_check(schema, TABLE.replace("  schema ", "  etag = \"x\"\n  schema ")), "etag is computed")
    dyn = TABLE.replace("  lifecycle {", '''  dynamic "time_partitionin" {
    for_each = []
    content {
      type = "DAY"
    }
  }

  lifecycle {''')
    _one(_check(schema, dyn), 'dynamic "time_partitionin" is not a nested block', 'did you mean "time_partitioning"')
    ok = TABLE.replace("""  time_partitioning {
    type  = "DAY"
    field = "game_date"
  }""", '''  dynamic "time_partitioning" {
    for_each = [1]
    content {
      type = "DAY"
    }
  }''')
    assert _check(schema, ok) == []
    bad_content = ok.replace('      type = "DAY"', '      type = "DAY"\n      typo = 1')
    _one(_check(schema, bad_content), "unknown argument time_partitioning.typo", 'did you mean "type"')


def test_an_unprotected_table_is_reported() -> None:
    unprotected = TABLE.replace("deletion_protection = true", "deletion_protection = var.protect")
    _one(table_problems({"t.tf": unprotected}), "deletion_protection must be true")
    no_guard = TABLE.replace("prevent_destroy = true", "prevent_destroy = false")
    _one(table_problems({"t.tf": no_guard}), "prevent_destroy = true is missing")
    ignoring = TABLE.replace("prevent_destroy = true", "prevent_destroy = true\n    ignore_changes  = [schema]")
    _one(table_problems({"t.tf": ignoring}), "ignore_changes hides schema changes")


def test_a_pin_other_than_the_schemas_and_a_type_missing_from_it_are_reported(schema) -> None:
    found = pin_problems(dict(schema, provider_version="9.0.0"))
    pinned = schema["provider_version"]
    _one(found, "infra/terraform/versions.tf: provider google is pinned", f"={pinned}", "the schema is of 9.0.0")
    _one(found, "infra/terraform/modules/phase/versions.tf: provider google is pinned")
    _one(coverage_problems(schema, {("google", "resource", "google_bigquery_routine")}), "google_bigquery_routine",
         "make provider-schema")
