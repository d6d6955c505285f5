"""Generations: ``generations/{date}`` holds the last generation allocated for a date.

A generation is per date across the whole cascade: a rerun, a forced backfill or a rebuild of
anything that already succeeded takes a new one, so a (phase, date, generation) claim is never
reused (see ``runtime.handoff``).
"""

from __future__ import annotations

from datetime import date

from cascade.errors import TransientError
from cascade.state.partitions import Partitions
from cascade.state.scope import CAS_ATTEMPTS, Scope, iso
from cascade.state.store import Write


class Generations:
    """Allocates the generations of one pipeline's dates."""

    def __init__(self, scope: Scope, partitions: Partitions) -> None:
        self.s = scope
        self.partitions = partitions

    def new_generation(self, day: date | str) -> int:
        """Allocate the next generation of ``day`` for the whole cascade: higher than every generation
        ever allocated for the date and than every partition of the date (any phase), atomically
        (create() or compare-and-set on one document per date), so two reruns never share one and a
        (phase, date, generation) claim is never reused."""
        col = self.s.col("generations")
        names = [p.name for p in self.s.pipeline.processors]
        for _ in range(CAS_ATTEMPTS):
            cur = self.s.store.get(col, iso(day))
            seen = [p.generation for p in self.partitions.partitions(names, [day]).values()]
            top = max([int((cur.data or {}).get("generation", 0)), *seen])
            doc = {"data_date": iso(day), "generation": top + 1, "updated_at": self.s.clock()}
            write = Write("update", col, iso(day), doc, cur.version) if cur.exists else Write("create", col, iso(day), doc)
            if self.s.store.commit([write]):
                return top + 1
        raise TransientError(f"could not allocate a generation for {iso(day)}: too much contention", date=iso(day))
