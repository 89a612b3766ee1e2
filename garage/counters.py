"""Counters that several threads add to (requests, retries, cache hits, ...)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Subclass with int/float fields; ``add`` and ``snapshot`` are safe from any thread."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False, kw_only=True)

    def add(self, **deltas) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
