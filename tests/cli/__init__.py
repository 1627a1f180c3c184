"""Tests of cbr_cli.cli: commands end to end (typer.testing.CliRunner)."""
