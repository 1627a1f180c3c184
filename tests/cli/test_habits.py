"""CLI habits: ``-h``, choices in the help, "did you mean", folders given to ``apply``,
and paths in messages as the user gave them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from cbr_cli.cli import options as opt
from cbr_cli.cli.app import app

runner = CliRunner()
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_the_commands_are_all_there() -> None:
    assert {"apply", "batch", "calibrate", "kernels", "shape"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_real_help(name: str, flag: str) -> None:
    command = get_command(app).commands[name]  # type: ignore[attr-defined]
    result = runner.invoke(app, [name, flag], env={"COLUMNS": "100"})
    assert result.exit_code == 0, (name, flag, result.stderr)
    assert result.stdout.startswith("Usage:")
    first = (command.help or "").strip().splitlines()[0]
    assert len(first) > 20, name  # a sentence, not a placeholder
    assert " ".join(first.split()[:6]) in " ".join(result.stdout.split())
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert (getattr(param, "help", None) or "").strip(), f"cbr {name} {param.name}"
            assert param.opts[0] in result.stdout, f"cbr {name} {param.opts[0]}"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_app_has_help(flag: str) -> None:
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0
    assert "See what Conv -> BatchNorm -> ReLU does" in result.stdout
    for name in COMMANDS:
        assert name in result.stdout


def test_the_help_choices_are_the_librarys() -> None:
    from cbr_cli.core.shapes import PADDING_MODES
    from cbr_cli.io.render import COLORMAPS, NORMALIZE_MODES
    from cbr_cli.spec.flags import BN_FLAG_CHOICES
    from cbr_cli.spec.pipeline_spec import ACTIVATIONS, COLORS, INITS

    assert opt.PADDING_MODES == PADDING_MODES
    assert opt.INITS == INITS
    assert opt.BN_CHOICES == BN_FLAG_CHOICES
    assert opt.ACTIVATIONS == ACTIVATIONS
    assert opt.COLORS == COLORS
    assert tuple(COLORMAPS) == opt.COLORMAP_CHOICES
    assert ("auto", *NORMALIZE_MODES) == opt.NORMALIZE_CHOICES


@pytest.mark.parametrize("name", ["apply", "batch", "shape"])
def test_choice_options_show_their_choices(name: str) -> None:
    out = runner.invoke(app, [name, "-h"], env={"COLUMNS": "200"}).stdout
    for shown in (
        "--padding-mode [zeros|reflect|replicate|circular]",
        "--bn [batch|running|off]",
        "--activation [relu|leaky_relu|none]",
        "--init [kaiming_uniform|kaiming_normal|xavier_uniform]",
        "--padding [P|PHxPW|valid|same|full]",
        "--color [gray|rgb]",
    ):
        assert shown in out, (name, shown)
    if name != "shape":
        assert "--colormap [rdbu|viridis|magma|gray]" in out
        assert "--normalize [auto|per-channel|per-stage|global]" in out
    assert "<str>" not in out and " TEXT " not in out


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(path)
    return path


@pytest.mark.parametrize(
    ("flag", "typo", "meant"),
    [
        ("--padding", "sme", "same"),
        ("--bn", "batc", "batch"),
        ("--activation", "rel", "relu"),
        ("--colormap", "virdis", "viridis"),
        ("--normalize", "per-chanel", "per-channel"),
        ("--padding-mode", "refelct", "reflect"),
        ("--init", "xavier", "xavier_uniform"),
        ("--color", "grey", "gray"),
    ],
)
@pytest.mark.parametrize("command", ["apply", "batch"])
def test_every_choice_option_suggests(
    tmp_path: Path, image: Path, command: str, flag: str, typo: str, meant: str
) -> None:
    target = str(image if command == "apply" else image.parent)
    result = runner.invoke(app, [command, target, "-o", str(tmp_path / "out"), flag, typo])
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {flag}: expected ")
    assert lines[0].endswith(f"(got {typo!r}); did you mean {meant!r}?")
    assert not (tmp_path / "out").exists()


def test_apply_on_a_folder_points_to_batch(tmp_path: Path, image: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["apply", image.name, ".", "-o", "out"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: cannot read image '.': is a directory; for a folder of images use "
        "`cbr batch . -o OUT`\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("absolute", [False, True])
def test_batch_and_calibrate_show_paths_as_given(
    tmp_path: Path, image: Path, monkeypatch, absolute: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    image.rename(tmp_path / "in" / "img.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    out = str(tmp_path / "out") if absolute else "out"
    result = runner.invoke(
        app,
        ["batch", "in", "-o", out, "-k", "sobel_x", "--no-channel-pngs"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1, result.stderr  # the broken image failed
    text = " ".join(result.stdout.split())
    assert f"wrote {out}" in text
    assert f"also in {os.path.join(out, 'failures.txt')}" in text
    if not absolute:
        assert str(tmp_path) not in result.stdout

    (tmp_path / "in" / "broken.png").unlink()
    config = tmp_path / "net.yaml"
    config.write_text("layers:\n  - conv: {kernels: [sobel_x]}\n    bn: batch\n")
    target = str(tmp_path / "cal.yaml") if absolute else "cal.yaml"
    result = runner.invoke(app, ["calibrate", "in", "-c", "net.yaml", "-o", target])
    assert result.exit_code == 0, result.stderr
    assert f"wrote {target}" in " ".join(result.stdout.split())
