"""Bytes <-> arrays: bounded reads of regular files, image decoding, ``.npy`` files, atomic
writers, the layout of an image's output folder, and ``render`` (maps -> pictures).

May import :mod:`cbr_cli.errors` and :mod:`cbr_cli.core`; knows nothing of pipelines or the
terminal. It sits below ``spec`` because reading a config reads files (YAML, weight headers).
"""
