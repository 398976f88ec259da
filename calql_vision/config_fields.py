"""`doc`: a dataclass field with a help string, shared by every config schema."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def doc(default: Any, help: str) -> Any:
    """A dataclass field with a help string (lists and dicts get a default_factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})
