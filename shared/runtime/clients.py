"""Google Cloud clients, built the same way against production and the local emulators.

The official clients honour ``PUBSUB_EMULATOR_HOST`` and ``FIRESTORE_EMULATOR_HOST`` themselves;
BigQuery and GCS need an explicit endpoint and anonymous credentials when
``BIGQUERY_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` are set.
"""

from __future__ import annotations

import os

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials


def bigquery(project: str):
    from google.cloud import bigquery as bq

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if host:
        if not host.startswith("http"):
            host = f"http://{host}"
        return bq.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=host))
    return bq.Client(project=project)


def firestore(project: str):
    from google.cloud import firestore as fs

    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return fs.Client(project=project, credentials=AnonymousCredentials())
    return fs.Client(project=project)


def publisher():
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient()


def subscriber():
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


def storage(project: str):
    from google.cloud import storage as gcs

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return gcs.Client(project=project, credentials=AnonymousCredentials())
    return gcs.Client(project=project)
