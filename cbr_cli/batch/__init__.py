"""cbr_cli.batch."""
