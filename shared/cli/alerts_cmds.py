"""``cascade alerts``: the alerts Cascade sent (production) or would have sent (locally).

Alerts are structured log records (``cascade.runtime.alerts``): severity ERROR, ``alert: true``, labels
pipeline / phase / processor / date. Locally they are kept in the logs under the state directory
(each phase function's ``<state>/logs/function-...log``, the CLI's ``<state>/logs/cli.log``) and this
command lists them with the production filter's terms. In production they are in Cloud Logging,
where the Terraform alert policy routes them (docs/operations.md); the command prints the
``gcloud logging read`` that lists them there.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone

from cascade.cli._common import print_json, state_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts", help="list the alerts sent (locally: what would have been sent) - blocked, failed, stuck, digests",
        description="List the pipeline's alert records, oldest first: locally from the logs the local stack and "
                    "the CLI keep under the state directory (<state>/logs/*.log), with the same terms as the "
                    "production log filter (severity ERROR, alert: true, label pipeline). With "
                    "CASCADE_PRODUCTION=1, prints the gcloud command that reads them from Cloud Logging. "
                    "docs/operations.md says how production routes them to notification channels.")
    p.add_argument("--since", help="only alerts at or after this ISO 8601 time (no offset = UTC)")
    p.add_argument("--all-pipelines", action="store_true", help="alerts of every pipeline, not only the one in use")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=_alerts)


def _alerts(args: argparse.Namespace) -> int:
    from cascade.definition.loading import load
    from cascade.deploy.tfvars import alert_log_filter
    from cascade.runtime.alerts import local_alert_files, read_alerts

    pipeline = load()
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            print(f"error: --since {args.since!r} is not an ISO 8601 time")
            return 2
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
    log_filter = alert_log_filter(pipeline).replace("\n", " ")
    if os.environ.get("CASCADE_PRODUCTION") == "1":
        print(f"alerts of {pipeline.name} are in Cloud Logging (the alert policy 'Cascade {pipeline.name}: alert "
              f"entries' notifies its channels); list them with:\n  gcloud logging read '{log_filter}' --limit=50")
        return 0
    files = local_alert_files(state_dir())
    found = read_alerts(files, None if args.all_pipelines else pipeline.name, since)
    if args.json:
        print_json(found)
        return 0
    for entry in found:
        labels = entry.get("logging.googleapis.com/labels") or {}
        where = " ".join(f"{k} {labels[k]}" for k in ("pipeline", "phase", "processor", "date") if labels.get(k))
        print(f"{entry.get('time')}  {where}\n  {entry.get('message')}")
    logs = state_dir() / "logs"
    print(f"{len(found)} alert(s) of {'every pipeline' if args.all_pipelines else pipeline.name} in {len(files)} "
          f"log(s) under {logs} (what production would have sent: the records matching "
          f"severity ERROR, alert: true, labels.pipeline); in production: gcloud logging read '{log_filter}'")
    return 0
