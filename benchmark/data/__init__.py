"""Datasets: one module per dataset, one entry point for all of them.

Every dataset is held in memory as a few tensors (frames as uint8) so that the
trainer can index whole batches at once instead of decoding items in Python.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.registry import DATASETS


@dataclass(frozen=True)
class DatasetInfo:
    """What a model, judge or protocol needs to know about a dataset."""
    name: str
    kind: str                      # "video" | "audio"
    frames: int                    # T
    channels: int                  # C (1 for audio: features live in `size`)
    size: int                      # image side (video) or feature bins (audio)
    static_labels: dict[str, int]  # label family -> number of classes (time-invariant)
    dynamic_labels: dict[str, int]  # sequence-level dynamic label families (e.g. action)
    dfp: dict = field(default_factory=dict)  # self-supervision signal: {"kind": "patch"|"regress"|"binary", "dim": int, ...}
    num_train: int = 0             # N for the MWS estimator
    num_sequences: int = 0         # size of the global `utterance` id space (speech: FHVAE's μ2 table)
    # (lo, hi) static families holding an unordered pair of labels over the same classes, stored
    # sorted (SMMNIST's two digits): judges score each pair jointly
    sorted_pairs: tuple = ()


class SequenceDataset(Dataset):
    """In-memory sequences: `x` uint8 [N,T,C,H,W] (or float for audio) plus label tensors [N,...]."""

    def __init__(self, info: DatasetInfo, split: str, tensors: dict[str, torch.Tensor], fingerprint: str):
        n = {k: len(v) for k, v in tensors.items()}
        if len(set(n.values())) != 1:
            raise ValueError(f"dataset {info.name}/{split}: tensors disagree on length: {n}")
        self.info, self.split, self.tensors, self.fingerprint = info, split, tensors, fingerprint

    def __len__(self):
        return len(self.tensors["x"])

    def batch(self, idx) -> dict[str, torch.Tensor]:
        """Items `idx` (tensor/list of indices) as one batch dict, frames as float in [0,1]."""
        out = {k: v[idx] for k, v in self.tensors.items()}
        if out["x"].dtype == torch.uint8:
            out["x"] = out["x"].float().div_(255)
        return out

    def __getitem__(self, i):
        return {k: v[0] for k, v in self.batch([i]).items()}

    def windows(self, frames: int) -> "SequenceDataset":
        """Every sequence cut into non-overlapping windows of `frames` frames (a tail shorter than that is
        dropped), keeping x and the sequence labels: a static-label view (a dynamic label may not hold in a
        window, so datasets that have one are refused)."""
        if self.info.dynamic_labels:
            raise ValueError(f"dataset {self.info.name}: windows of {frames} frames keep only static labels, "
                             f"but it has dynamic labels {list(self.info.dynamic_labels)}")
        x = self.tensors["x"]
        if not 1 <= frames <= x.shape[1]:
            raise ValueError(f"dataset {self.info.name}: windows of {frames} frames from sequences of {x.shape[1]}")
        k = x.shape[1] // frames
        tensors = {"x": x[:, :k * frames].reshape(len(x) * k, frames, *x.shape[2:]),
                   "static": self.tensors["static"].repeat_interleave(k, 0),
                   "dynamic": self.tensors["dynamic"].repeat_interleave(k, 0)}
        return SequenceDataset(self.info, self.split, tensors, self.fingerprint)


def concat_datasets(parts: list[SequenceDataset], fingerprint: str) -> SequenceDataset:
    """One dataset of the rows of `parts` (same info and frame shape), on the columns they all have."""
    keys = set.intersection(*(set(p.tensors) for p in parts))
    shapes = {tuple(p.tensors["x"].shape[1:]) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"dataset {parts[0].info.name}: cannot concatenate sequences of shapes {sorted(shapes)}")
    return SequenceDataset(parts[0].info, parts[0].split,
                           {k: torch.cat([p.tensors[k] for p in parts]) for k in sorted(keys)}, fingerprint)


def cache_dir() -> Path:
    """Where generated data and derived labels are cached (gitignored, inside the working dir by default)."""
    d = Path(os.environ.get("BENCHMARK_CACHE", "data_cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def fingerprint(obj) -> str:
    """Short stable hash of a JSON-able object (dataset generation settings, configs)."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_cache(path: Path, record: Path) -> dict | None:
    """The arrays of a cache file if it is intact, else None. Intact = its sha256 matches the record written
    with it; a file from before records existed is trusted once if every array reads back (zip CRCs), and
    gets its record then."""
    if record.exists() and record.read_text().strip() != _sha256(path):
        return None
    try:
        with np.load(path) as z:  # allow_pickle stays False: a cache holds arrays only
            arrays = {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001 - truncated or not an npz: rebuild
        return None
    if not record.exists():
        record.write_text(_sha256(path) + "\n")
    return arrays


def cached_arrays(name: str, key: str, build):
    """Load `{name}-{key}.npz` from the cache, or call build() -> dict of arrays and save it atomically with
    its checksum. A truncated or altered cache file is detected and rebuilt, never used."""
    path = cache_dir() / f"{name}-{key}.npz"
    record = path.with_suffix(".sha256")
    if path.exists():
        arrays = _read_cache(path, record)
        if arrays is not None:
            return arrays
        print(f"warning: cache file {path} is damaged (truncated, or its checksum does not match {record.name}); "
              f"rebuilding it", file=sys.stderr)
    arrays = build()
    if path.exists() and record.exists() and _read_cache(path, record) is not None:
        return arrays  # another process (a table worker) finished the same build meanwhile: keep its file
    # per-process temporary names: processes building the same cache at once (table workers) each write
    # their own file; the builds are deterministic, so whichever replace lands last is the same data
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    digest = _sha256(tmp)
    os.replace(tmp, path)
    tmp_record = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    tmp_record.write_text(digest + "\n")
    os.replace(tmp_record, record)  # a crash between the two replaces leaves a file the record rejects: rebuilt
    return arrays


# fit = train minus val: what a sweep trains on, so that its val score is on unseen sequences
# (tables train on all of train, as the paper does)
SPLITS = ("train", "val", "test", "fit")


def load_dataset(name: str, split: str, profile="cpu", data_dir: str | None = None,
                 options: dict | None = None) -> SequenceDataset:
    """The one entry point: `name` from the dataset registry, split train|val|test|fit (train − val).

    `profile` (a name or a Profile) sets sizes for the embedded data, `options` (a run's `data.options`,
    e.g. {"split": "core"}) override them; `data_dir` switches to the real-format loader of the files the
    user already has.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    from benchmark.profiles import get_profile
    prof = get_profile(profile) if isinstance(profile, str) else profile
    _import_all()
    return DATASETS.build(name, split=split, data=prof.data_settings(name, options), data_dir=data_dir)


def _import_all():
    """Import every dataset module (each registers itself on import)."""
    from benchmark.data import faces, smmnist, speech, sprites  # noqa: F401
