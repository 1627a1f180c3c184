"""Tests of the folder-scale pieces of cbr batch: the Dask pool and the Zarr store."""
