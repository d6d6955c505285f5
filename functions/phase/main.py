"""The Cloud Function of any phase of any pipeline: one generic entry point.

The phase it serves comes from ``CASCADE_PHASE`` (set per deployed function / local server), the
pipeline from ``CASCADE_PIPELINE_FILE``: adding a phase is a definition change only. A malformed
value fails the server's start; an unset one fails every invocation with the same clear message
(so tooling can still import this module).
"""

import os

import functions_framework

from cascade.runtime.entry import handle_cloud_event


def _phase() -> int | None:
    value = os.environ.get("CASCADE_PHASE")
    if value is None:
        return None
    if not value.isdigit():
        raise RuntimeError(f"CASCADE_PHASE={value!r}: set it to the number of the phase this function serves "
                           f"(e.g. CASCADE_PHASE=3); `cascade up` sets it from the definition")
    return int(value)


PHASE = _phase()


@functions_framework.cloud_event
def handle(event):
    if PHASE is None:
        raise RuntimeError("CASCADE_PHASE is not set: set it to the number of the phase this function serves "
                           "(e.g. CASCADE_PHASE=3); `cascade up` sets it from the definition")
    handle_cloud_event(event, PHASE)
