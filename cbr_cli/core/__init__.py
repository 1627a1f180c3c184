"""The numerical core: output-size arithmetic, conv2d / batch_norm / (leaky) ReLU on numpy and
SciPy, the conv engines and their thread pool, the kernel bank, per-channel statistics.

No files, no terminal: imports only numpy, SciPy, threadpoolctl and :mod:`cbr_cli.errors`.
"""
