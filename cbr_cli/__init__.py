"""cbr: see what Conv -> BatchNorm -> ReLU does to a real image.

The numerical core's public API is :mod:`cbr_cli.ops` (PyTorch semantics on numpy/SciPy);
the command-line tool is :mod:`cbr_cli.cli.app`. The packages, from the bottom up:
``errors`` <- ``core`` <- ``io`` <- ``spec`` <- ``run`` <- ``batch`` <- ``cli``
(each imports only those below it; ``lint-imports`` checks it).
"""

__version__ = "0.1.0"
