"""`cbr calibrate` writes YAML that cbr reads back, whatever the names (issue 15, item 9).

Folder, config and weight-file names go into the written file: the first two into the
``#`` header, the weight path into a value. A name with a control character (ESC), a
line break, ``#``, ``: ``, quotes, non-ASCII letters or bytes that are not UTF-8 must
neither break the YAML nor change the pipeline it describes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.batch.calibrate import comment_text, write_pipeline_yaml
from cbr_cli.cli.app import app
from cbr_cli.spec.flags import LayerFlags, build_spec

runner = CliRunner()

NAMES = {
    "ESC": "a\x1b[31mred",
    "newline": "two\nlines",
    "carriage return": "cr\rhere",
    "hash and colon": "x #not: a comment",
    "quotes": 'it\'s "quoted"',
    "unicode": "Überlänge-日本-😀",
    "NEL and line separator": "a\x85b\u2028c",
    "DEL and C1": "a\x7fb\x9bc",
    "BOM": "\ufeffbom",
    "not UTF-8": os.fsdecode(b"caf\xe9"),  # a Latin-1 name: a lone surrogate in Python
}


def config_text(weight: Path) -> str:
    return yaml.safe_dump(
        {
            "layers": [
                {
                    "name": "first",
                    "conv": {"weight": str(weight)},
                    "bn": {"mode": "batch"},
                    "activation": "relu",
                }
            ]
        }
    )


def images(folder: Path) -> None:
    rng = np.random.default_rng(2)
    folder.mkdir()
    for i in range(3):
        pixels = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names")
@pytest.mark.parametrize("name", list(NAMES.values()), ids=list(NAMES))
def test_every_calibrated_file_reads_back_to_the_same_pipeline(tmp_path: Path, name: str):
    weight = tmp_path / f"w-{name}.npy"  # in a value of the written YAML
    np.save(weight, np.random.default_rng(1).standard_normal((2, 3, 3, 3)).astype(np.float32))
    runs = {}
    for label, folder_name in (("plain", "plain"), ("odd", f"in-{name}")):
        images(tmp_path / folder_name)
        config = tmp_path / f"{folder_name}.yaml"
        config.write_text(config_text(weight), encoding="utf-8")
        out = tmp_path / f"calibrated-{label}.yaml"
        args = ["calibrate", str(tmp_path / folder_name), "-c", str(config), "-o", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.stderr
        runs[label] = out
    raw = runs["odd"].read_bytes()
    text = raw.decode("utf-8")  # valid UTF-8, lone surrogates included (escaped)
    assert not set(text) & {"\x1b", "\r", "\x85", "\u2028", "\x7f", "\x9b", "\ufeff"}
    header = text.split("\ninput:")[0].split("\nlayers:")[0].splitlines()
    assert all(line.startswith("#") for line in header)
    assert comment_text(str(tmp_path / f"in-{name}")) in text  # the folder, escaped
    if name == NAMES["not UTF-8"]:
        assert "in-caf\\xe9" in text  # the byte as it is on disk
    odd = build_spec(runs["odd"], LayerFlags())  # cbr's own reader
    plain = build_spec(runs["plain"], LayerFlags())
    assert odd.to_plain() == plain.to_plain()
    assert odd.to_plain()["layers"][0]["conv"]["weight"] == str(weight)
    assert odd.layers[0].bn.mode == "running"


@pytest.mark.parametrize("name", list(NAMES.values()), ids=list(NAMES))
def test_any_header_gives_one_comment_line_per_line(tmp_path: Path, name: str):
    out = tmp_path / "p.yaml"
    plain = {"layers": [{"name": name, "conv": {"out_channels": 2, "kernel_size": 3}}]}
    header = f"first {name}\nsecond {name}"
    write_pipeline_yaml(out, plain, header)
    text = out.read_text(encoding="utf-8")
    lines = text.split("\n")  # YAML's other line breaks must not occur: they are escaped
    count = header.count("\n") + 1  # the header is split at "\n" only
    assert all(line.startswith("# ") for line in lines[:count])
    assert lines[count].startswith("layers:")
    assert not set(text) & {"\x1b", "\r", "\x85", "\u2028", "\x7f", "\x9b", "\ufeff"}
    assert yaml.safe_load(text) == plain  # the name in a value round-trips too
