"""Atomic checkpoints: state_dicts of everything, counters and RNG states, never half-written."""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calql_vision.atomic_file import atomic_file


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save that never leaves half a file (see atomic_file)."""
    # Serialised in memory first: torch's writer turns a write error (a full disk) into an
    # opaque RuntimeError, a plain file write keeps it an OSError that names the file.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_file(path) as handle:
        handle.write(buffer.getbuffer())


def capture_rng_states(numpy_rng: np.random.Generator) -> dict[str, Any]:
    states = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy_generator": numpy_rng.bit_generator.state,
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], numpy_rng: np.random.Generator) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    numpy_rng.bit_generator.state = states["numpy_generator"]
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error


def checkpoint_differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Where two checkpoints differ: "counters" and every agent tensor not bit-identical (the
    test of a resume: stopping and continuing must change nothing)."""

    def tensors(state: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
        found = {}
        for key, value in state.items():
            if isinstance(value, dict):
                found.update(tensors(value, f"{prefix}{key}."))
            elif torch.is_tensor(value):
                found[f"{prefix}{key}"] = value
        return found

    problems = [] if expected["counters"] == got["counters"] else [f"counters {got['counters']}"]
    want, have = tensors(expected["agent"]), tensors(got["agent"])
    return problems + [k for k in sorted(want.keys() | have.keys())
                       if k not in want or k not in have or not torch.equal(want[k], have[k])]
