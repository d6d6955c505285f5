"""The one importer of ``module:attribute`` names a definition gives (a Python processor's callable, a
synthetic-data hook), and the ``sys.path`` folders those modules are found in.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.definition import schema

if TYPE_CHECKING:
    from cascade.definition.model import Pipeline

# The repository's `pipelines/` folder: the reference definitions and their Python modules.
PIPELINES_FOLDER = Path(__file__).resolve().parents[2] / "pipelines"
# `python: package.module:attribute` - the callable of a Python processor (or a synthetic-data hook).
CALLABLE = re.compile(schema.CALLABLE)


def make_importable(pipeline: "Pipeline") -> None:
    """Put the definition's folder, and the repository's ``pipelines/`` folder, on ``sys.path``
    (after everything else): a pipeline's Python modules live beside its YAML."""
    folders = [PIPELINES_FOLDER]
    if pipeline.source_path:
        folders.insert(0, Path(pipeline.source_path).resolve().parent)
    for folder in map(str, folders):
        if folder not in sys.path:
            sys.path.append(folder)


def import_module(pipeline: "Pipeline", spec: str) -> Any:
    """The module of ``spec`` (``module:attribute``), imported from ``PYTHONPATH`` or the folders of
    ``make_importable``. Raises ImportError, or whatever the module raises while it is imported."""
    make_importable(pipeline)
    return importlib.import_module(spec.partition(":")[0])


def attribute(module: Any, spec: str) -> Any:
    """The object the ``attribute`` part of ``spec`` names in ``module`` (dotted: ``Class.method``).
    Raises AttributeError."""
    obj = module
    for part in spec.partition(":")[2].split("."):
        obj = getattr(obj, part)
    return obj


def import_callable(pipeline: "Pipeline", spec: str) -> Any:
    """The object ``spec`` (``module:attribute``) names, e.g. ``my_pipeline.features:build``.
    Raises ImportError / AttributeError."""
    return attribute(import_module(pipeline, spec), spec)
