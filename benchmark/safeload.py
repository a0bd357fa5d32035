"""Files that could carry code (checkpoints, judge caches) are read as data only.

`torch.load(weights_only=True)` unpickles tensors and plain values (dicts, lists, numbers, strings) and
refuses any other object, so a crafted file cannot run code when a researcher loads a checkpoint someone
sent them. Everything we save is written in that form (`seeding.rng_state` stores numpy's state as a
tensor). A file from before that rule is refused with the command that converts it, for users who trust it.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch


class UnsafeFileError(ValueError):
    """A file that holds more than tensors and plain values: loading it could run code."""


def load_data(path: str | Path, what: str, map_location="cpu"):
    """The payload of a file written by `torch.save`, read as data only. `what` names the option or cache
    the file came from, for the error (e.g. "--resume", "judge cache")."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL\s+([\w.]+)", str(e))  # the object it refused to build
        if found is None:  # not a pickle of ours at all (a text file, a truncated one)
            raise ValueError(f"{what} {path}: not a readable checkpoint or cache file (torch.save format "
                             f"expected)") from None
        culprit = found.group(1)
        raise UnsafeFileError(
            f"{what} {path}: refused, it holds objects other than tensors and plain values ({culprit}), and "
            f"unpickling them could run code. A checkpoint written by an older version of this harness holds a "
            f"numpy random state; if you trust the file, convert it once with `python -m benchmark "
            f"migrate-checkpoint {path} --trust`") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, not a torch file, ...: one clear message
        raise ValueError(f"{what} {path}: not a readable checkpoint or cache file (torch.save format expected; "
                         f"{type(e).__name__}: {str(e)[:200]})") from None


def migrate_checkpoint(path: str | Path, trust: bool = False) -> Path:
    """Rewrite an old checkpoint in the data-only form (atomically, in place). Loading the old file runs
    its pickle, which is why `trust` must be given: only for files whose origin you know."""
    from benchmark.seeding import portable_rng_state
    path = Path(path)
    if not trust:
        raise UnsafeFileError(f"migrate-checkpoint {path}: converting reads the file with the unsafe loader; "
                              f"pass --trust only for a file whose origin you know")
    if not path.is_file():
        raise FileNotFoundError(f"migrate-checkpoint {path}: no such file")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"migrate-checkpoint {path}: not a checkpoint written by this harness")
    if "rng" in payload:
        payload["rng"] = portable_rng_state(payload["rng"])
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    load_data(tmp, "migrate-checkpoint")  # the result must load safely before it replaces the original
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same file, converted: keep its time
    os.replace(tmp, path)
    return path
