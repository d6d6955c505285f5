"""Partition state: the one status vocabulary, the Firestore tracker (the only module that talks to
Firestore) and the freshness rules derived from what was recorded.
"""
