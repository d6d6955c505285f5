"""Cascade: event-driven, date-partitioned, multi-phase data pipelines on Google Cloud.

The ``shared`` package is the framework library every phase function imports. One module per
concept: ``pipeline`` (the definition), ``messages`` (the wire contract), ``tracking`` (Firestore
state), ``warehouse`` (BigQuery), ``runner`` (one phase for one date), ``cli`` (the ``cascade``
command).
"""

__version__ = "0.1.0"
