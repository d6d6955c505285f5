"""The sweeper Cloud Function (HTTP, called by Cloud Scheduler): repairs stuck state."""

import json

import functions_framework

from cascade.ops.sweeper import sweep
from cascade.runtime import logs
from cascade.runtime.app import default_app


@functions_framework.http
def handle(request):
    logs.configure()
    report = sweep(default_app())
    return json.dumps(report.to_dict()), 200, {"Content-Type": "application/json"}
