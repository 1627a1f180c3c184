"""Shared fixtures: floating-point warnings are failures in the render tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest


@pytest.fixture
def fp_raise() -> Iterator[None]:
    """Any floating-point error (divide by zero, invalid, overflow) raises."""
    with np.errstate(all="raise"):
        yield
