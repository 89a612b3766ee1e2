"""Progress of exports and pushes: ``progress(fraction, message)``, as the Publish tab's bar takes it."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]


def say(progress: Progress | None, fraction: float, message: str) -> None:
    """Report ``fraction`` (kept in [0, 1] and rounded, so stages that add up stay in order) with ``message``."""
    if progress:
        progress(round(max(0.0, min(1.0, fraction)), 4), message)
