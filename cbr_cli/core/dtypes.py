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


OUTPUT_DTYPES = ("float32", "float16")
"""What feature maps may be saved as (``--dtype``): computed in float32, stored as this."""


def to_output_dtype(data: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """``data`` as ``dtype`` (one of :data:`OUTPUT_DTYPES`), C-contiguous, for saving.

    float16 rounds to nearest (numpy's cast) and holds finite values up to 65504; a
    finite value that would become ``inf`` is refused rather than saved as ``inf``
    (it would poison every mean over the saved maps). NaN and inf already in ``data``
    stay what they are.

    Raises
    ------
    CbrError
        ``dtype`` is not one of :data:`OUTPUT_DTYPES`, or float16 overflows, naming
        ``name`` (e.g. ``layer1/conv``) and its largest magnitude.
    """
    if dtype not in OUTPUT_DTYPES:
        raise CbrError(f"--dtype: expected one of {', '.join(OUTPUT_DTYPES)} (got {dtype!r})")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(data, dtype=dtype)
    if dtype == "float16" and np.isinf(out).any():
        overflow = np.isinf(out) & np.isfinite(data)
        if overflow.any():
            largest = float(np.abs(np.asarray(data)[overflow]).max())
            raise CbrError(
                f"--dtype float16: {name} has values beyond float16's range (|x| up to "
                f"{largest:.6g} > 65504), which would be saved as inf; use --dtype float32",
                1,
            )
    return out
