"""ZetaSQL starts in well under a second after the first time: its compiled WebAssembly is kept on disk.

The ``zetasql`` package runs ZetaSQL as a 28 MB WebAssembly module, which wasmtime compiles to
machine code each time a process first analyzes a statement: ~15 s, on every ``cascade lint`` or
``cascade test`` that has a statement to analyze. ``install()`` makes that compilation happen once
per machine: the compiled module is serialized to ``~/.cache/cascade/zetasql-<key>.cwasm``
(``$XDG_CACHE_HOME`` moves it, as it moves ``cascade lint``'s verdicts) and later processes load it (milliseconds).
The key is the wasm file's SHA-256, the wasmtime version and the machine, so an upgrade of either
compiles again. A cache file that cannot be read or loaded is ignored (compiled as before, then
rewritten); writing is atomic (a temporary file renamed). ``CASCADE_ZETASQL_CACHE=0`` turns it off.

The file holds machine code wasmtime loads as it is: it is written by this user's own process into
this user's own cache folder, like the virtualenv's compiled code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("cascade.lint.zetasql_cache")

_installed = False


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cascade"


def _key(wasm_path: str) -> str:
    import wasmtime

    digest = hashlib.sha256()
    with open(wasm_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    version = getattr(wasmtime, "__version__", "") or _dist_version("wasmtime")
    digest.update(f"|wasmtime {version}|{platform.machine()}|{platform.system()}".encode())
    return digest.hexdigest()[:24]


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - the key then relies on the wasm file's hash alone
        return ""


def install() -> None:
    """Serve ``zetasql``'s module compilation from the on-disk cache in this process (idempotent)."""
    global _installed
    if _installed or os.environ.get("CASCADE_ZETASQL_CACHE", "1") == "0":
        return
    try:
        from zetasql.core import wasm_client
    except ImportError:
        return
    original = wasm_client.Module

    class CachedModule:
        """Stands in for ``wasmtime.Module`` where ``WasmClient`` compiles the ZetaSQL module."""

        @staticmethod
        def from_file(engine: Any, path: str) -> Any:
            return load_compiled(original, engine, str(path))

        def __getattr__(self, name: str) -> Any:  # pragma: no cover - only from_file is used there
            return getattr(original, name)

    wasm_client.Module = CachedModule  # type: ignore[attr-defined, assignment]
    _installed = True


def load_compiled(module_type: Any, engine: Any, wasm_path: str) -> Any:
    """The compiled module of ``wasm_path``: from the cache when it holds a usable one, else compiled
    (and stored for the next process)."""
    try:
        target = cache_dir() / f"zetasql-{_key(wasm_path)}.cwasm"
    except OSError as exc:
        log.debug("zetasql cache unavailable: %s", exc)
        return module_type.from_file(engine, wasm_path)
    if target.is_file():
        try:
            return module_type.deserialize_file(engine, str(target))
        except Exception as exc:  # noqa: BLE001 - a stale or damaged file: compile again
            log.info("zetasql cache %s not usable (%s); compiling again", target, exc)
    module = module_type.from_file(engine, wasm_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", dir=str(target.parent))
        with os.fdopen(fd, "wb") as f:
            f.write(module.serialize())
        os.replace(tmp, target)
        for old in target.parent.glob("zetasql-*.cwasm"):  # earlier versions' files
            if old != target:
                old.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - caching is an optimization only
        log.info("zetasql cache not written (%s)", exc)
    return module
