"""Bytes <-> arrays: reading files, images, arrays, atomic writers, and pictures of maps.

See the target layout (issue 9); the coordinator's version of this file wins at merge.
"""
