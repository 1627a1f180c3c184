"""cbr_cli.spec."""
