"""`doc`: a dataclass field with a help string and, where a value can be wrong, its valid
range; shared by every config schema (checked by calql_vision.validation)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Range:
    """low <(=) value <(=) high; either bound may be absent. Infinite values pass only where
    `infinite` is true (a clip that is off); NaN never does."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    infinite: bool = False

    def accepts(self, value: float) -> bool:
        if math.isnan(value) or (math.isinf(value) and not self.infinite):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a number" + (" (inf allowed)" if self.infinite else "")


@dataclass(frozen=True)
class OneOf:
    choices: tuple

    def accepts(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + " | ".join(str(c) for c in self.choices)


# Ranges most fields need.
POSITIVE = Range(0, low_open=True)
AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
UNIT = Range(0, 1)
FINITE = Range()


def doc(default: Any, help: str, valid: Range | OneOf | None = None) -> Any:
    """A dataclass field with a help string (lists and dicts get a default_factory). `valid`
    applies to the value, or to each element of a list."""
    metadata = {"help": help, "valid": valid}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)
