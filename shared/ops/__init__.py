"""Operating a deployed pipeline: per-date status and waiting, the sweeper, dead letters, daily runs.
"""
