"""The terminal: the Typer app, shared options, one module per command, rich tables and
progress. The only package that imports typer or rich; CbrError becomes a message here.

May import every other package; nothing imports it.
"""


def main() -> None:
    """Console-script entry point (``cbr``); the app is imported only when it runs."""
    from cbr_cli.cli.app import main as run

    run()
