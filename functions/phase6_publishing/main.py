"""Phase 6 (publishing) Cloud Function: adapts the Pub/Sub CloudEvent to the Cascade library."""

import functions_framework

from shared.entry import handle_cloud_event

PHASE = 6


@functions_framework.cloud_event
def handle(event):
    handle_cloud_event(event, PHASE)
