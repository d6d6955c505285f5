"""What runs inside a phase (or sweeper) Cloud Function: the entry point, the runner, messages,
publishing, the warehouse gateway, strict-mode checks, gates, processors and the hand-off.

Modules here import only ``cascade.runtime``, ``cascade.definition``, ``cascade.state`` and
``cascade.errors`` (checked by ``tests/test_layout.py``): this is what ships in a function zip.
"""
