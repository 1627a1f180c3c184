"""cbr_cli.io."""
