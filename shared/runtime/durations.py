"""How a length of time reads for a person (progress lines, waiting times, the status page)."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
