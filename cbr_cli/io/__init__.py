"""Bytes <-> arrays: images, .npy files, weight files, atomic writers.

Modules here import only errors, core, spec and io (see the package layout note).
"""
