"""The checkpoint file of a run directory: atomic, validated, and enough to rebuild the model.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
torch.load(weights_only=True): a checkpoint from elsewhere cannot run code on load. It carries a
format tag so a foreign .pt file is refused with a clear message instead of a KeyError later.
Since version 2 it also holds `model_spec` (registry name + every constructor option) and the data
normalisation, so a run can be loaded for analysis or sampling without the trainer or the training set.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from dia_ode.rundir.jsonio import atomic_write_bytes
from dia_ode.rundir.safe_write import refuse_link

FORMAT = "dia_ode.checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 lacks model_spec and normalisation: rundir rebuilds them from the config
REQUIRED_KEYS = ("format", "version", "epoch", "model", "optimizer", "history", "config")
CHECKPOINT = Path("checkpoints") / "last.pt"  # relative to the run directory


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or not one of ours; the message is one line."""


def brief(text: str, limit: int = 120) -> str:
    """The first sentence of another library's error message, on one line and cut at a word boundary
    (torch's messages run to a page of advice; a cut mid-word reads as a broken message)."""
    words = " ".join(str(text).split())
    sentence = re.split(r"(?<=[.!?])\s", words, maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def save_checkpoint(path: str | os.PathLike, *, epoch: int, model: dict, optimizer: dict,
                    history: list[dict], config: dict, **extra: Any) -> None:
    """Write a checkpoint atomically (temp file + rename): a crash keeps the previous one.

    A link at `path` is replaced, never written through; a run's checkpoints/ folder that is a link is refused.

    Args:
        extra: further entries, e.g. model_spec {"name", "options"} and normalisation {"mean", "std"}.

    Raises:
        UnsafePath: `path` is a run's checkpoints/last.pt and its checkpoints/ folder is a symbolic link.
    """
    if Path(path).parts[-len(CHECKPOINT.parts):] == CHECKPOINT.parts:
        refuse_link(Path(path).parent, "folder")
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "epoch": epoch, "model": model,
               "optimizer": optimizer, "history": history, "config": config, **extra}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_state(target: Any, state: dict, path: str | os.PathLike) -> None:
    """target.load_state_dict(state) for a model or optimizer; a mismatch becomes a one-line CheckpointError."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit the {type(target).__name__} "
                              f"({brief(str(err))})") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load and validate a checkpoint written by save_checkpoint.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a dia_ode checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch's notes (e.g. on a legacy file's pickle protocol) add nothing
            warnings.filterwarnings("ignore", module=r"torch(\.|$)")  # to the one line raised below
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal(path, str(err))) from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({brief(err) or type(err).__name__})") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dia_ode checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing or payload["version"] not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path} has an unsupported layout (missing {missing or 'nothing'}, "
                              f"version {payload.get('version')})")
    return payload


def _refusal(path: Path, message: str) -> str:
    """One line for an UnpicklingError of torch.load(weights_only=True).

    torch's own message is a page of advice to re-run with weights_only=False, which is exactly what
    must not be done with a file that carries code; only the refused global (or opcode) is kept.
    """
    if not message.startswith("Weights only load failed"):
        return f"checkpoint {path} is corrupt or unreadable ({brief(message) or 'UnpicklingError'})"
    # "GLOBAL posix.system" (os.system on Linux), else torch's reason, e.g. "Unsupported operand 149"
    found = re.search(r"(GLOBAL [\w.]+)", message)
    if found:
        return f"checkpoint {path} holds code or objects the safe loader refuses ({brief(found.group(1))}); not loaded"
    # An opcode torch does not admit: garbage bytes and a plain pickle carrying code look the same here.
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    what = found.group(1).strip() if found else "see torch.load's weights_only"
    return f"checkpoint {path} is corrupt or holds objects the safe loader refuses ({brief(what)}); not loaded"
