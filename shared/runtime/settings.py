"""Runtime settings: a typed record read from the environment, with documented defaults and limits.

Everything that depends on where Cascade runs (project, emulator hosts, namespace) or on
operational tuning (leases, attempts) lives here, so modules receive values instead of reading
``os.environ`` themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Settings:
    """Operational settings of one Cascade process.

    Attributes:
        project: Google Cloud project id (``CASCADE_PROJECT`` or ``GOOGLE_CLOUD_PROJECT``).
        namespace: prefix of every resource name (``CASCADE_NAMESPACE``; tests use one each).
        lease_seconds: how long a running partition's lease lasts without a heartbeat (default
            120 s; the heartbeat renews it every third of that, so a 20-minute run keeps its lease).
        max_attempts: a partition whose transient failures reach this many attempts is recorded
            as failed for good and acknowledged (default 5; nothing retries forever).
        republish_after_seconds: a trigger claim left unpublished this long may be republished by
            a redelivery or the sweeper (default 30 s; the receiver dedupes).
        bigquery_timeout_seconds: deadline of one BigQuery API request, and of a job sent outside a
            run (default 300 s); a run's jobs wait up to their processor's ``job_timeout_seconds``.
        publish_timeout_seconds: how long a publish may take before it counts as failed (default
            30 s); the trigger claim then stays unpublished for a redelivery or the sweeper.
        stuck_phase_seconds: a phase whose processors are partly done for longer than this is
            reported by the sweeper with the missing processors (default 3600 s).
        busy_wait_seconds: a delivery that finds its partition (or a same-phase upstream) held by
            another live run waits up to this long for it to finish or for its lease to expire,
            instead of spending Pub/Sub delivery attempts (default: 1.5 x the lease, at most 300 s).
    """

    project: str = "cascade-local"
    namespace: str = ""
    lease_seconds: float = 120.0
    max_attempts: int = 5
    republish_after_seconds: float = 30.0
    bigquery_timeout_seconds: float = 300.0
    publish_timeout_seconds: float = 30.0
    stuck_phase_seconds: float = 3600.0
    busy_wait_seconds: float | None = None

    @property
    def busy_wait(self) -> float:
        return min(self.lease_seconds * 1.5, 300.0) if self.busy_wait_seconds is None else self.busy_wait_seconds

    @property
    def heartbeat_seconds(self) -> float:
        return max(self.lease_seconds / 3.0, 0.2)

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "Settings":
        e = os.environ if env is None else env
        s = Settings(
            project=e.get("CASCADE_PROJECT") or e.get("GOOGLE_CLOUD_PROJECT") or "cascade-local",
            namespace=e.get("CASCADE_NAMESPACE", ""),
            lease_seconds=float(e.get("CASCADE_LEASE_SECONDS", 120)),
            max_attempts=int(e.get("CASCADE_MAX_ATTEMPTS", 5)),
            republish_after_seconds=float(e.get("CASCADE_REPUBLISH_AFTER_SECONDS", 30)),
            bigquery_timeout_seconds=float(e.get("CASCADE_BIGQUERY_TIMEOUT_SECONDS", 300)),
            publish_timeout_seconds=float(e.get("CASCADE_PUBLISH_TIMEOUT_SECONDS", 30)),
            stuck_phase_seconds=float(e.get("CASCADE_STUCK_PHASE_SECONDS", 3600)),
            busy_wait_seconds=float(e["CASCADE_BUSY_WAIT_SECONDS"]) if e.get("CASCADE_BUSY_WAIT_SECONDS") else None,
        )
        if not 1 <= s.max_attempts <= 100:
            raise ValueError("CASCADE_MAX_ATTEMPTS must be between 1 and 100")
        if s.lease_seconds < 1:
            raise ValueError("CASCADE_LEASE_SECONDS must be at least 1")
        return s
