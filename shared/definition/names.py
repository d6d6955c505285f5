"""Every resource name derived from a pipeline: datasets, table ids, topics, subscriptions, function
folders, Firestore collections and buckets, and the SQL with its ``{dataset.table}`` placeholders
resolved to table ids.

A ``namespace`` prefixes every name so that several instances of one definition (tests, developers)
can share a project or an emulator without seeing each other: ``dev1`` turns the dataset ``raw`` into
``dev1_raw`` and the topic ``orders-phase1-load`` into ``dev1-orders-phase1-load``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cascade.definition import placeholders
from cascade.errors import DefinitionError

if TYPE_CHECKING:
    from cascade.definition.model import Phase, Processor, Table


class ResourceNames:
    """The naming methods of ``Pipeline`` (mixed into it): each reads only the pipeline's name,
    namespace, raw bucket, phases and processors."""

    if TYPE_CHECKING:
        name: str
        namespace: str
        raw_bucket: str
        processors: tuple[Processor, ...]

        def phase(self, number: int) -> Phase: ...

    def dataset_id(self, dataset: str) -> str:
        return f"{self.namespace}_{dataset}" if self.namespace else dataset

    def datasets(self) -> list[str]:
        """Dataset ids (namespaced) of every output table, plus the ops dataset."""
        return sorted({self.dataset_id(p.output.dataset) for p in self.processors})

    def table_id(self, project: str, table: Table) -> str:
        return f"{project}.{self.dataset_id(table.dataset)}.{table.name}"

    def _prefix(self) -> str:
        return f"{self.namespace}-" if self.namespace else ""

    def topic(self, phase: int) -> str:
        """The trigger topic of ``phase``: users' triggers and the previous phase's completions."""
        p = self.phase(phase)
        return f"{self._prefix()}{self.name}-phase{p.number}-{p.name}"

    def function_name(self, phase: int) -> str:
        """Folder of the phase's function under ``functions/`` (and its deployed name's stem)."""
        p = self.phase(phase)
        return f"phase{p.number}_{p.name}"

    def dead_letter_topic(self, phase: int) -> str:
        return f"{self.topic(phase)}-dlq"

    def push_subscription(self, phase: int) -> str:
        return f"{self.topic(phase)}-push"

    def dead_letter_subscription(self, phase: int) -> str:
        return f"{self.dead_letter_topic(phase)}-sub"

    def collection(self, kind: str) -> str:
        """Firestore collection of ``kind`` (partitions, runs, triggers, phases, rejected, leases)."""
        return f"cascade_{self.namespace or 'default'}_{self.name}_{kind}"

    def bucket(self, project: str) -> str:
        return f"{project}-{self._prefix()}{self.raw_bucket}".lower()

    def export_bucket(self, proc: Processor, project: str) -> str:
        """The bucket ``proc``'s export is published to: its ``export.bucket`` stem, named like the raw
        bucket (``<project>-<namespace->stem``), or the raw bucket when it declares none."""
        stem = (proc.export or {}).get("bucket")
        return f"{project}-{self._prefix()}{stem}".lower() if stem else self.bucket(project)

    def buckets(self, project: str) -> list[str]:
        """Every bucket the pipeline uses: the raw bucket, then the exports' own buckets."""
        out = [self.bucket(project)]
        for p in self.processors:
            if p.export is not None and self.export_bucket(p, project) not in out:
                out.append(self.export_bucket(p, project))
        return out

    def render_sql(self, proc: Processor, project: str) -> str:
        """The processor's SELECT with ``{dataset.table}`` placeholders replaced by declared table ids."""
        sql = proc.sql if proc.sql is not None else (proc.export or {}).get("sql")
        if sql is None:
            raise DefinitionError(f"processor {proc.name} has no sql")
        return self.render_text(sql, project)

    def render_text(self, sql: str, project: str) -> str:
        """``sql`` with its ``{dataset.table}`` placeholders replaced by declared table ids."""
        tables = {p.output.logical: p.output for p in self.processors}
        return placeholders.substitute(sql, lambda logical: self.table_id(project, tables[logical]))
