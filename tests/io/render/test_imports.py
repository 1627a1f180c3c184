"""Rendering stays out of start-up: heavy libraries load only when a figure or page is made."""

from __future__ import annotations

import json

from tests.helpers import run_python

MODULES = [
    "colormaps",
    "ranges",
    "colorize",
    "text",
    "resample",
    "colorbar",
    "montage",
    "grid",
    "kernel_picture",
    "histograms",
    "report_context",
    "report",
]
HEAVY = ("matplotlib", "jinja2", "scipy", "typer", "rich", "PIL", "yaml")


def test_importing_the_render_modules_loads_no_heavy_library() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {MODULES!r}:\n"
        "    importlib.import_module('cbr_cli.io.render.' + m)\n"
        "import cbr_cli.io.render\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} & set(heavy))))\n"
    )
    assert json.loads(run_python(code).stdout) == []


def test_cbr_help_loads_neither_matplotlib_nor_jinja2() -> None:
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from cbr_cli.cli.app import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules}"
        " & {'matplotlib', 'jinja2'})))\n"
    )
    assert json.loads(run_python(code).stdout) == []
