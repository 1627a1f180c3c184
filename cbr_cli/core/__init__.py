"""cbr_cli.core."""
