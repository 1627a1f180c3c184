"""``cbr kernels``: the built-in kernel bank, listed with a small preview.

Registered on the app by :func:`register` (called at the bottom of :mod:`cbr_cli.cli.app`).
"""

from typing import Annotated, Optional

import typer

from cbr_cli.cli.common import run as _run


def register(app: typer.Typer) -> None:
    """Add the ``kernels`` command to ``app``."""
    app.command("kernels")(kernels)


def kernels(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Kernels or sets to show (default: all).")
    ] = None,
) -> None:
    """List the built-in kernel bank (cross-correlation kernels) with a small preview."""

    def body() -> None:
        from rich.console import Console

        from cbr_cli.cli.stats_tables import kernels_table
        from cbr_cli.core import kernels as bank

        specs = bank.expand_names(names) if names else bank.kernel_names()
        rows = []
        for spec in specs:
            k = bank.get_kernel(spec)
            rows.append(
                (
                    spec,
                    f"{k.shape[0]}x{k.shape[1]}",
                    bank.describe(spec),
                    bank.preview_ascii(k, max_size=5, decimals=2),
                )
            )
        console = Console(emoji=False)
        console.print(kernels_table(rows))
        if not names:
            sets = ", ".join(f"{s} ({len(bank.kernel_set(s))})" for s in bank.set_names())
            console.print(
                f"Sets: {sets}. Use a name with -k/--kernel or in a config's kernels: list."
            )

    _run(body)
