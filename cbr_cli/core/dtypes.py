"""The one dtype policy of the numerical core, applied at entry, and the checks on values.

float32 in -> float32 out, float64 stays float64, everything else (integers, bool,
float16) is computed in float32.
"""

from __future__ import annotations

import numbers

import numpy as np

from cbr_cli.errors import CbrError


def as_float(array: object, name: str = "input") -> np.ndarray:
    """Apply cbr's dtype policy: float32/float64 kept, anything else real → float32.

    Raises
    ------
    CbrError
        For complex or non-numeric data.
    """
    a = np.asarray(array)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype.kind in "biuf":
        return a.astype(np.float32)
    raise CbrError(f"{name} must be a real numeric array, but got dtype {a.dtype}")


def _is_real(value: object) -> bool:
    """Python or numpy real scalar (``np.float32(0.1)`` counts, as torch accepts it)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        raise CbrError(f"{name} contains NaN or inf values")
