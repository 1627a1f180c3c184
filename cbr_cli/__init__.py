"""cbr: see what Conv -> BatchNorm -> ReLU does to a real image.

The numerical core is :mod:`cbr_cli.core.ops` (PyTorch semantics on numpy/SciPy);
the command-line tool is :mod:`cbr_cli.cli.app`.
"""

__version__ = "0.1.0"
