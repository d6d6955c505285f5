"""Recorded state: the one status vocabulary (``status``), the ``Tracker`` facade over the state
modules (partitions, history, claims, generations, leases, rejected), the document store they write
through (``store``: Firestore in ``firestore_store``, the only module that talks to Firestore; in
memory in ``memory``, for unit tests) and the freshness rules derived from what was recorded.
"""
