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
