"""Tests of cbr_cli.cli."""
