"""Writes infra/provider-schema/google-<version>.json: the Google provider's own schema, trimmed to
the resource and data-source types infra/terraform uses.

Source: the PyPI wheels ``cdktn-provider-google`` / ``cdktn-provider-google-beta`` (CDK Terrain's
prebuilt bindings, generated from the provider's schema). Each ships a jsii assembly
(``cdktn_provider_google/_jsii/provider-google@<release>.jsii.tgz`` -> ``package/.jsii``) describing
every resource and data source. From it this script takes, per type the configuration uses:

* each argument: required or optional, attribute or nested block, a block single (max one) or
  repeated, and each nested block's schema, recursively;
* the computed-only attributes (a getter without an ``...Input`` counterpart), which expressions may
  read but the configuration may not set;
* the names of all the provider's resource and data-source types (google-beta: those google lacks),
  so a misspelt or beta-only type is told apart from one the trimmed schema leaves out.

The Terraform name of an argument is the anchor of its docs link
(``.../docs/resources/<type>#<argument>``), never a camelCase -> snake_case guess. A computed-only
attribute has no docs link; its name is the one the same package's JavaScript getter reads
(``get creationTime() { return this.getNumberAttribute('creation_time'); }``).

The provider version comes from the exact pin in infra/terraform/versions.tf; CDKTN_RELEASES maps it
to the package release that binds it, and the script checks the assembly's docs links name that
version. google-beta is covered for the types the configuration uses with ``provider = google-beta``.

Needs python-hcl2 (to read the configuration) and pip (to download the wheels), i.e. .venv-hcl:

    make provider-schema          # = .venv-hcl/bin/python infra/provider_schema.py
    .venv-hcl/bin/python infra/provider_schema.py --wheel-dir /tmp/wheels   # reuse downloaded wheels
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TF_ROOT = REPO / "infra" / "terraform"
OUT_DIR = REPO / "infra" / "provider-schema"

# Provider version -> the cdktn-provider-google(-beta) release generated from it (the package README
# says "bindings for hashicorp/google provider version X"; the script verifies the docs links).
CDKTN_RELEASES = {"8.7.0": "21.1.0"}
PACKAGES = {"google": "cdktn-provider-google", "google-beta": "cdktn-provider-google-beta"}

_DOC_LINK = re.compile(r"registry\.terraform\.io/providers/hashicorp/([\w-]+)/([\d.]+)/docs/"
                       r"(resources|data-sources)/(\w+)(?:#(\w+))?")
_SKIP_GETTERS = {"tfResourceType", "internalValue"}


# ---------------------------------------------------------------- the configuration's types
def tf_files() -> list[Path]:
    return sorted(TF_ROOT.rglob("*.tf"))


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def provider_of(body: dict[str, Any]) -> str:
    """``google`` or ``google-beta`` from a resource's ``provider`` meta-argument (alias dropped)."""
    value = _unquote(str(body.get("provider", "google")))
    value = value.removeprefix("${").removesuffix("}")
    return value.split(".")[0]


def used_types() -> dict[str, set[tuple[str, str]]]:
    """{provider: {(kind, type)}} of the google types infra/terraform uses; kind 'resource'/'data'."""
    import hcl2  # python-hcl2, in .venv-hcl

    out: dict[str, set[tuple[str, str]]] = {}
    for path in tf_files():
        with path.open() as fh:
            raw = hcl2.load(fh)
        for kind in ("resource", "data"):
            for entry in raw.get(kind, []):
                for rtype, named in entry.items():
                    rtype = _unquote(rtype)
                    if not rtype.startswith("google_"):
                        continue
                    for body in named.values():
                        out.setdefault(provider_of(body), set()).add((kind, rtype))
    return out


def pinned_version() -> str:
    text = (TF_ROOT / "versions.tf").read_text()
    m = re.search(r'\bgoogle\s*=\s*\{[^}]*?version\s*=\s*"=?\s*(\d+\.\d+\.\d+)"', text, re.S)
    if not m:
        raise SystemExit("infra/terraform/versions.tf does not pin hashicorp/google exactly (= X.Y.Z)")
    return m.group(1)


# ---------------------------------------------------------------- the wheel
def download(package: str, release: str, wheel_dir: Path) -> Path:
    pattern = f"{package.replace('-', '_')}-{release}-*.whl"
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        print(f"downloading {package}=={release} (~70 MB) ...", file=sys.stderr)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                               "--no-deps", f"{package}=={release}", "-d", str(wheel_dir)],
                              capture_output=True, text=True)
        noise = "WARNING: Location 'file:"  # local index mirrors that do not exist on this machine
        sys.stderr.write("".join(line for line in proc.stderr.splitlines(keepends=True) if noise not in line))
        if proc.returncode != 0:
            raise SystemExit(f"pip download {package}=={release} failed")
        found = sorted(wheel_dir.glob(pattern))
    if not found:
        raise SystemExit(f"no wheel {pattern} in {wheel_dir}")
    return found[0]


class Assembly:
    """The jsii assembly of one wheel and the JavaScript sources of the modules asked for."""

    def __init__(self, wheel: Path) -> None:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.endswith(".jsii.tgz")]
            if len(names) != 1:
                raise SystemExit(f"{wheel.name}: expected one *.jsii.tgz, found {names}")
            self._tgz = zf.read(names[0])
        with tarfile.open(fileobj=io.BytesIO(self._tgz), mode="r:gz") as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None
            self.jsii = json.load(member)
        self.types: dict[str, Any] = self.jsii["types"]
        self._js: dict[str, str] = {}

    def load_js(self, files: set[str]) -> None:
        wanted = {f"package/{f}" for f in files}
        with tarfile.open(fileobj=io.BytesIO(self._tgz), mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    fh = tar.extractfile(member)
                    assert fh is not None
                    self._js[member.name.removeprefix("package/")] = fh.read().decode()

    def getter_names(self, js_file: str, class_name: str) -> dict[str, str]:
        """camelCase getter -> Terraform attribute name, read from the class's JavaScript."""
        text = self._js.get(js_file, "")
        m = re.search(rf"\nclass {re.escape(class_name)} extends .*?(?=\nclass |\Z)", text, re.S)
        body = m.group(0) if m else ""
        out: dict[str, str] = {}
        for g in re.finditer(r"\n    get (\w+)\(\) \{\n(.*?)\n    \}", body, re.S):
            name, code = g.group(1), g.group(2)
            lit = re.search(r"""\((?:this, )?['"]([a-z0-9_]+)['"]""", code)
            if not lit and (field := re.search(r"return this\.(_\w+);", code)):
                lit = re.search(rf"{re.escape(field.group(1))} = new [\w.]+\(this, ['\"]([a-z0-9_]+)['\"]", body)
            if lit:
                out[name] = lit.group(1)
        return out


def _link(docs: dict[str, Any]) -> re.Match[str] | None:
    return _DOC_LINK.search(f"{docs.get('summary', '')} {docs.get('remarks', '')}")


def _block_type(t: dict[str, Any]) -> tuple[str, str] | None:
    """(struct fqn, 'single'|'list') when a property's type is a nested block, else None."""
    if "fqn" in t and not t["fqn"].startswith("cdktn."):
        return t["fqn"], "single"
    for u in t.get("union", {}).get("types", []):
        el = u.get("collection", {}).get("elementtype", {})
        if u.get("collection", {}).get("kind") == "array" and "fqn" in el and not el["fqn"].startswith("cdktn."):
            return el["fqn"], "list"
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class Extractor:
    def __init__(self, asm: Assembly, version: str) -> None:
        self.asm = asm
        self.version = version
        self.index: dict[tuple[str, str], str] = {}  # (kind, type) -> class fqn
        for fqn, t in asm.types.items():
            if t.get("kind") != "class" or t.get("base") not in ("cdktn.TerraformResource", "cdktn.TerraformDataSource"):
                continue
            m = _link(t.get("docs", {}))
            if m:
                kind = "resource" if m.group(3) == "resources" else "data"
                slug = m.group(4)  # google has "bigquery_table", google-beta "google_bigquery_table"
                self.index[(kind, slug if slug.startswith("google_") else f"google_{slug}")] = fqn

    def js_files(self, wanted: set[tuple[str, str]]) -> set[str]:
        out = set()
        for key in wanted:
            if key in self.index:
                src = self.asm.types[self.index[key]]["locationInModule"]["filename"]
                out.add(re.sub(r"^src/(.*)\.ts$", r"lib/\1.js", src))
        return out

    def _struct(self, fqn: str, out_class: str | None, js_file: str) -> dict[str, Any]:
        struct = self.asm.types[fqn]
        arguments: dict[str, str] = {}
        blocks: dict[str, Any] = {}
        camel_names: set[str] = set()
        for p in struct.get("properties", []):
            m = _link(p.get("docs", {}))
            if m and m.group(2) != self.version:
                raise SystemExit(f"{fqn}.{p['name']}: docs link names provider {m.group(2)}, expected {self.version}")
            name = m.group(5) if m and m.group(5) else _snake(p["name"])
            camel_names.add(p["name"])
            required = not p.get("optional", False)
            bt = _block_type(p["type"])
            if bt:
                sub_fqn, nesting = bt
                sub_out = sub_fqn + "OutputReference"
                block = self._struct(sub_fqn, sub_out if sub_out in self.asm.types else None, js_file)
                blocks[name] = {"nesting": nesting, "required": required, **block}
            else:
                arguments[name] = "required" if required else "optional"
        computed: list[str] = []
        if out_class:
            cls = self.asm.types[out_class]
            getters = {p["name"] for p in cls.get("properties", []) if not p.get("static")}
            names = self.asm.getter_names(js_file, cls["name"])
            for g in sorted(getters):
                if g in _SKIP_GETTERS or g.endswith("Input") or g in camel_names or f"{g}Input" in getters:
                    continue
                computed.append(names.get(g) or _snake(g))
        out: dict[str, Any] = {"arguments": dict(sorted(arguments.items()))}
        if blocks:
            out["blocks"] = dict(sorted(blocks.items()))
        if computed:
            out["computed"] = sorted(set(computed) - set(arguments) - set(blocks))
        return out

    def schema(self, key: tuple[str, str]) -> dict[str, Any]:
        cls = self.asm.types[self.index[key]]
        config = cls["initializer"]["parameters"][-1]["type"]["fqn"]
        js_file = re.sub(r"^src/(.*)\.ts$", r"lib/\1.js", cls["locationInModule"]["filename"])
        return self._struct(config, self.index[key], js_file)


def build(version: str, wheel_dir: Path) -> dict[str, Any]:
    release = CDKTN_RELEASES.get(version)
    if release is None:
        raise SystemExit(f"no cdktn-provider-google release known for provider {version}; add it to CDKTN_RELEASES "
                         f"(the package README names the provider version it binds)")
    used = used_types()
    used.setdefault("google", set())
    doc: dict[str, Any] = {
        "provider_version": version,
        "generated_by": "infra/provider_schema.py (make provider-schema)",
        "providers": {},
    }
    for provider in sorted(used, key=lambda p: p != "google"):  # google first
        if provider not in PACKAGES:
            raise SystemExit(f"google types used with provider {provider!r}: only google and google-beta are known")
        wheel = download(PACKAGES[provider], release, wheel_dir)
        asm = Assembly(wheel)
        ex = Extractor(asm, version)
        links = {m.group(1, 2) for t in list(asm.types.values())[:200] if (m := _link(t.get("docs", {})))}
        if links != {(provider, version)}:
            raise SystemExit(f"{wheel.name} documents {links}, expected {(provider, version)}")
        asm.load_js(ex.js_files(used[provider]))
        section: dict[str, Any] = {"package": f"{PACKAGES[provider]}=={release}", "resource": {}, "data": {}}
        missing = []
        for kind, rtype in sorted(used[provider]):
            if (kind, rtype) not in ex.index:
                missing.append(f"{kind} {rtype}")
                continue
            section[kind][rtype] = ex.schema((kind, rtype))
        # Every type name of the provider (google-beta: only those google lacks), so the check can tell
        # a misspelt or beta-only type from one the trimmed schema merely leaves out.
        names = {kind: sorted(t for k, t in ex.index if k == kind) for kind in ("resource", "data")}
        if provider != "google":
            ga = doc["providers"].get("google", {}).get("all_types", {})
            names = {kind: [t for t in names[kind] if t not in set(ga.get(kind, []))] for kind in names}
        section["all_types"] = names
        if missing:
            raise SystemExit(f"hashicorp/{provider} {version} has no {', '.join(missing)} "
                             f"(a google-beta type needs provider = google-beta)")
        doc["providers"][provider] = section
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", help="provider version (default: the pin in infra/terraform/versions.tf)")
    ap.add_argument("--wheel-dir", type=Path, help="where to find/download the wheels (default: a temp dir)")
    args = ap.parse_args(argv)
    version = args.version or pinned_version()
    with tempfile.TemporaryDirectory() as tmp:
        doc = build(version, args.wheel_dir or Path(tmp))
    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / f"google-{version}.json"
    for old in OUT_DIR.glob("google-*.json"):
        if old != out:
            old.unlink()
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    counts = {p: sum(len(s[k]) for k in ("resource", "data")) for p, s in doc["providers"].items()}
    print(f"wrote {out.relative_to(REPO)} ({out.stat().st_size // 1024} KB; types per provider: {counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
