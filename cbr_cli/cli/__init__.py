"""cbr_cli.cli."""
