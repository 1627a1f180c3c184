"""``cbr_cli.ops`` (the face of ``cbr_cli.core.ops``): importing it pulls in no CLI stack.

Run in a fresh interpreter (``sys.executable``), since this test process has long since
imported everything.  ``scipy.signal`` is banned too: it costs ~0.8 s of start-up and
the engines need only ``scipy.fft``, which ``ops`` imports lazily.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import REPO, run_python

FORBIDDEN = ("typer", "rich", "PIL", "yaml", "scipy.signal", "click")


def test_import_ops_pulls_in_no_cli_modules() -> None:
    code = (
        "import json, sys\n"
        "import cbr_cli.ops, cbr_cli.core.ops\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "loaded = sorted(name for name in sys.modules\n"
        "    if any(name == f or name.startswith(f + '.') for f in forbidden))\n"
        "same = cbr_cli.ops.conv2d is cbr_cli.core.ops.conv2d\n"
        "print(json.dumps({'ops': cbr_cli.ops.__file__, 'same': same, 'forbidden': loaded}))\n"
    )
    result = run_python(code)
    report = json.loads(result.stdout)
    assert Path(report["ops"]).resolve() == REPO / "cbr_cli" / "ops.py"
    assert report["same"]
    assert report["forbidden"] == []
