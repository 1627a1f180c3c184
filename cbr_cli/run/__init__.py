"""cbr_cli.run."""
