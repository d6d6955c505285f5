"""Generations: ``generations/{date}`` holds the last generation allocated for a date.

A generation is per date across the whole cascade: a rerun, a forced backfill or a rebuild of
anything that already succeeded takes a new one, so a (phase, date, generation) claim is never
reused (see ``runtime.handoff``).
"""

from __future__ import annotations

from datetime import date

from google.api_core import exceptions as gexc

from cascade.errors import TransientError
from cascade.state.partitions import Partitions
from cascade.state.scope import CAS_ATTEMPTS, FIRESTORE_TIMEOUT, Scope, iso


class Generations:
    """Allocates the generations of one pipeline's dates."""

    def __init__(self, scope: Scope, partitions: Partitions) -> None:
        self.s = scope
        self.partitions = partitions

    def ref(self, day: date | str):
        return self.s.col("generations").document(iso(day))

    def new_generation(self, day: date | str) -> int:
        """Allocate the next generation of ``day`` for the whole cascade: higher than every generation
        ever allocated for the date and than every partition of the date (any phase), atomically
        (create() or compare-and-set on one document per date), so two reruns never share one and a
        (phase, date, generation) claim is never reused."""
        ref = self.ref(day)
        names = [p.name for p in self.s.pipeline.processors]
        for _ in range(CAS_ATTEMPTS):
            self.s.ops += 1
            snap = ref.get(timeout=FIRESTORE_TIMEOUT)
            seen = [p.generation for p in self.partitions.partitions(names, [day]).values()]
            top = max([int((snap.to_dict() or {}).get("generation", 0)) if snap.exists else 0, *seen])
            doc = {"data_date": iso(day), "generation": top + 1, "updated_at": self.s.clock()}
            try:
                self.s.ops += 1
                if snap.exists:
                    ref.update(doc, option=self.s.db.write_option(last_update_time=snap.update_time),
                               timeout=FIRESTORE_TIMEOUT)
                else:
                    ref.create(doc, timeout=FIRESTORE_TIMEOUT)
                return top + 1
            except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.Aborted):
                continue
        raise TransientError(f"could not allocate a generation for {iso(day)}: too much contention", date=iso(day))
