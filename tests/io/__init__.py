"""Tests of cbr_cli.io."""
