"""The one status vocabulary: every state a partition, a run or a plan cell can be in.

``Status`` is a ``StrEnum``, so values compare equal to their plain strings (what Firestore stores)
and render as them in JSON, logs and tables. Runner, tracking, checks, plan, scheduler, sweeper,
status and the UI all speak it; nothing else spells a status.

Partition states (stored in Firestore):

* ``missing``  never run (no document)
* ``running``  a run holds the lease (alive while ``lease_expires_at`` is in the future)
* ``waiting``  strict mode found an upstream still running: retried with backoff; it expires like a
  lease (a dependent of an expired one blocks, the sweeper re-triggers it)
* ``success``  the processor's rows for the date are written
* ``failed``   the run failed (``transient`` says whether it will be retried)
* ``blocked``  strict mode refused to run (reason + resolution command recorded)
* ``skipped``  a date the calendar expects no data on

Outcomes of one attempt that are not stored states:

* ``run``    the lease was taken: this attempt runs the partition
* ``done``   already succeeded for this generation (dedupe on the business key)
* ``busy``   another live run holds the partition (or the one it depends on)
* ``superseded``  the partition moved to a newer generation than the trigger's
* ``lost``   the run lost its lease to another run; its result was not recorded

States of a downstream-trigger claim (stored in Firestore, ``claims``):

* ``claimed``    the phase completed and its one claimer won; not yet known to be published
* ``published``  the trigger was published (republished ones stay ``published``)

Derived from versions (``freshness``), never stored:

* ``stale``  a ``success`` whose code changed since, or whose inputs were rebuilt, failed or are
  stale themselves - shown with its reason, rebuilt by a backfill, refused as an input

Derived views: a backfill plan's cells add ``no-game`` and ``running-expired``; a phase's roll-up
for a date adds ``complete``, ``stale``, ``partial`` and ``triggered-not-started`` (shown as
"triggered, not started": the phase before it completed and published its trigger, and no partition
of this phase has begun at that generation - nothing of it exists, or only older work; the sweeper
re-publishes such a trigger once it is older than its deadline).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    MISSING = "missing"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCESS = "success"
    FAILED = "failed"
    BLOCKED = "blocked"
    SKIPPED = "skipped"
    # outcomes of one attempt (never stored as a partition's status)
    RUN = "run"  # the lease was taken: this attempt runs
    # cells of a backfill plan and the status page (derived from a partition and the calendar)
    NO_GAME = "no-game"  # a date the calendar expects no data on
    EXPIRED = "running-expired"  # running, but its lease expired (a crashed run)
    # a phase's roll-up for a date (``cascade status``)
    COMPLETE = "complete"
    PARTIAL = "partial"
    TRIGGERED = "triggered-not-started"  # roll-up: triggered by the phase before it, nothing begun since
    DONE = "done"
    BUSY = "busy"
    STALE = "stale"  # derived: a success that can no longer be believed (freshness)
    SUPERSEDED = "superseded"  # outcome: the trigger's generation is older than the partition's
    LOST = "lost"
    # states of a downstream-trigger claim (stored)
    CLAIMED = "claimed"
    PUBLISHED = "published"


TERMINAL = frozenset({Status.SUCCESS, Status.FAILED, Status.BLOCKED, Status.SKIPPED})
