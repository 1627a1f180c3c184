"""Tests of cbr_cli.core."""
