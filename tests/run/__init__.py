"""Tests of cbr_cli.run."""
