"""Name → builder registries. The CLI, tables and sweeps build everything by name
through these, so there is no if/elif chain over model or dataset names anywhere."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Entry:
    name: str
    builder: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)  # dotted config overrides a preset applies
    doc: str = ""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, builder: Callable[..., Any] | None = None, *,
                 defaults: dict[str, Any] | None = None, doc: str = ""):
        """Register `builder` under `name`; usable as a decorator when builder is None."""
        def _add(b):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, b, dict(defaults or {}), doc or (b.__doc__ or "").strip().split("\n")[0])
            return b
        return _add if builder is None else _add(builder)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def build(self, name: str, *args, **kwargs):
        return self.get(name).builder(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def items(self):
        return sorted(self._entries.items())


MODELS = Registry("model")       # filled by benchmark/zoo.py (models/ never imports benchmark)
DATASETS = Registry("dataset")   # filled by the modules of benchmark/data/
# dataset -> builder of extra judge-training sequences from its train split's own sources
# (builder(train, data_settings, data_dir, n, frames, seed) -> SequenceDataset); judges only
JUDGE_EXTRAS = Registry("judge training augmenter")
