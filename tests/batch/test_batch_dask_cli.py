"""``cbr batch --dask``: the CLI on a LocalCluster equals the local ``-j 2`` run."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from tests.batch.conftest import make_folder, tree
from tests.helpers import run_python

runner = CliRunner()


def cli(tmp_path: Path, pipeline: Path) -> list[str]:
    return ["batch", str(tmp_path / "in"), "-r", "-c", str(pipeline), "-o", str(tmp_path / "o")]


def digest(root: Path) -> str:
    """One hash of every file's path and bytes; manifest.json with its options normalised."""
    h = hashlib.sha256()
    for rel, data in tree(root).items():
        if rel == "manifest.json":
            manifest = json.loads(data)
            manifest.get("options", {}).pop("dask", None)  # recorded options only
            manifest.get("options", {}).pop("jobs", None)
            data = json.dumps(manifest, sort_keys=True).encode()
        h.update(rel.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


@pytest.mark.slow
def test_dask_local_run_gives_the_same_tree_as_local_workers(tmp_path, pipeline):
    pytest.importorskip("distributed")
    make_folder(tmp_path / "in", 6)
    base = ["batch", str(tmp_path / "in"), "-r", "-c", str(pipeline), "--save-npy"]
    local = runner.invoke(app, [*base, "-o", str(tmp_path / "A"), "-j", "2"])
    assert local.exit_code == 0, local.output
    dask = runner.invoke(app, [*base, "-o", str(tmp_path / "B"), "--dask", "local:2"])
    assert dask.exit_code == 0, dask.output
    assert "6" in dask.stdout
    assert len(tree(tmp_path / "B")) == len(tree(tmp_path / "A")) > 6
    assert digest(tmp_path / "A") == digest(tmp_path / "B")


def test_bad_dask_address_is_one_line(tmp_path, pipeline):
    pytest.importorskip("distributed")
    make_folder(tmp_path / "in", 1)
    result = runner.invoke(
        app,
        [*cli(tmp_path, pipeline), "--dask", "udp://x"],
    )
    assert result.exit_code == 2
    assert "--dask" in result.stderr and "tcp://HOST:PORT" in result.stderr
    assert "Traceback" not in result.output


def test_dask_missing_extra_is_one_line(tmp_path, pipeline, monkeypatch):
    monkeypatch.setitem(sys.modules, "cbr_cli.batch.dask_pool", None)  # import fails
    make_folder(tmp_path / "in", 1)
    result = runner.invoke(
        app,
        [*cli(tmp_path, pipeline), "--dask", "local:1"],
    )
    assert result.exit_code == 2
    assert "--dask needs the dask extra: pip install 'cbr-cli[dask]'" in result.stderr


def test_cbr_help_imports_neither_dask_nor_zarr():
    code = (
        "import sys; from typer.testing import CliRunner; from cbr_cli.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "r = CliRunner().invoke(app, ['batch', '--help']); assert r.exit_code == 0; "
        "print([m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'zarr') "
        "or m in ('cbr_cli.batch.dask_pool', 'cbr_cli.batch.zarr_store')])"
    )
    assert run_python(code).stdout.strip() == "[]"
