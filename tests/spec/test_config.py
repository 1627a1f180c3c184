"""Pipeline YAML and layer flags: positions in error messages, safe loading, override rules.

Error cases run the real command in-process (``cbr apply IMAGE -c FILE``) and check the
whole contract: exit code 2, nothing on stdout, exactly one stderr line
``error: FILE:LINE:COL: key.path: ...`` at the right place, and no output folder.
Line and column numbers are counted by hand from the YAML text of each case.
"""

from __future__ import annotations

import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from cbr_cli.errors import CbrError
from cbr_cli.spec.flags import LayerFlags, build_spec
from cbr_cli.spec.pipeline_spec import parse_pipeline
from cbr_cli.spec.pipeline_types import MAX_CHANNELS, MAX_SIDE, PipelineSpec
from cbr_cli.spec.yaml_reader import MAX_DEPTH, MAX_VALUES, Value, from_plain, load_yaml
from tests.helpers import one_line_error

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, with a small gray ``img.png`` in it."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8), "L").save("img.png")
    return tmp_path


def run_config(text: str | bytes, *flags: str, name: str = "c.yaml"):
    """``cbr apply img.png -c NAME`` with ``text`` written to NAME (in the cwd)."""
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return runner.invoke(
        app, ["apply", "img.png", "-o", "out", "-c", name, "--no-channel-pngs", *flags]
    )


def assert_one_line_error(result, prefix: str, *fragments: str) -> str:
    """Exit code 2, no stdout, one ``error:`` line on stderr starting with ``prefix``."""
    line = one_line_error(result, *fragments)
    assert line.startswith("error: " + prefix), line
    # Errors found while building the layers come after run_apply created OUT: allow an
    # empty folder, but no file (see test_errors_found_when_building_layers_leave_no_folder).
    assert not Path("out").exists() or not any(Path("out").rglob("*"))
    return line


# ------------------------------------------------------------ located errors

CONV2 = "layers:\n  - conv:\n      out_channels: 2\n"

LOCATED = {
    "typo key": (
        "layers:\n  - conv:\n      kernal_size: 3\n      out_channels: 2\n",
        3, 7, "layers[0].conv.kernal_size", "unknown key (did you mean 'kernel_size'?)",
    ),
    "unknown top-level key": (
        "layer:\n  - conv: {out_channels: 2}\n",
        1, 1, "layer", "unknown key (did you mean 'layers'?)",
    ),
    "stride not a number": (
        CONV2 + "      stride: abc\n",
        4, 15, "layers[0].conv.stride", "expected a positive integer (got 'abc')",
    ),
    "stride zero": (
        CONV2 + "      stride: [1, 0]\n",
        4, 19, "layers[0].conv.stride[1]", "expected a positive integer (got 0)",
    ),
    "stride triple": (
        CONV2 + "      stride: [1, 1, 1]\n",
        4, 15, "layers[0].conv.stride", "or a pair [h, w] (got a list of 3)",
    ),
    "out_channels float": (
        "layers:\n  - conv:\n      out_channels: 2.5\n",
        3, 21, "layers[0].conv.out_channels", "expected a positive integer (got 2.5)",
    ),
    "out_channels bool": (
        "layers:\n  - conv:\n      out_channels: yes\n",
        3, 21, "layers[0].conv.out_channels", "expected a positive integer (got True)",
    ),
    "padding_mode mirror": (
        CONV2 + "      padding_mode: mirror\n",
        4, 21, "layers[0].conv.padding_mode",
        "expected one of ['zeros', 'reflect', 'replicate', 'circular'] (got 'mirror')",
    ),
    "padding negative": (
        CONV2 + "      padding: -1\n",
        4, 16, "layers[0].conv.padding", "expected a non-negative integer (got -1)",
    ),
    "padding word": (
        CONV2 + "      padding: half\n",
        4, 16, "layers[0].conv.padding", "'valid', 'same', 'full'] (got 'half')",
    ),
    "groups zero": (
        CONV2 + "      groups: 0\n",
        4, 15, "layers[0].conv.groups", "expected a positive integer (got 0)",
    ),
    "groups not dividing out_channels": (
        "layers:\n  - conv:\n      out_channels: 3\n      groups: 2\n",
        4, 15, "layers[0].conv.groups", "groups must divide out_channels (3) (got groups=2)",
    ),
    "seed negative": (
        CONV2 + "      seed: -3\n",
        4, 13, "layers[0].conv.seed", "expected a non-negative integer (got -3)",
    ),
    "init typo": (
        CONV2 + "      init: kaiming\n",
        4, 13, "layers[0].conv.init", "did you mean 'kaiming_normal'?",
    ),
    "init with kernels": (
        "layers:\n  - conv:\n      kernels: [sobel_x]\n      init: xavier_uniform\n",
        4, 13, "layers[0].conv.init", "'init'/'seed' apply to random weights",
    ),
    "weight and kernels": (
        "layers:\n  - conv:\n      weight: w.npy\n      kernels: [sobel_x]\n",
        4, 16, "layers[0].conv.kernels", "give either 'weight' or 'kernels', not both",
    ),
    "unknown kernel": (
        "layers:\n  - conv:\n      kernels: [sobel_x, sobelx]\n",
        3, 26, "layers[0].conv.kernels[1]", "unknown kernel 'sobelx'; did you mean 'sobel_x'",
    ),
    "out_channels against kernels": (
        "layers:\n  - conv:\n      kernels: sobel\n      out_channels: 3\n",
        4, 21, "layers[0].conv.out_channels",
        "does not match the kernels given (2 output channels) (got 3)",
    ),
    "bias list of wrong length": (
        CONV2 + "      bias: [0.1, 0.2, 0.3]\n",
        4, 13, "layers[0].conv.bias", "expected 2 values, one per output channel (got 3)",
    ),
    "momentum above 1": (
        CONV2 + "    bn:\n      momentum: 2\n",
        5, 17, "layers[0].bn.momentum", "expected a number in [0, 1] (got 2.0)",
    ),
    "eps zero": (
        CONV2 + "    bn:\n      eps: 0\n",
        5, 12, "layers[0].bn.eps", "expected a positive number (got 0.0)",
    ),
    "eps nan": (
        CONV2 + "    bn:\n      eps: .nan\n",
        5, 12, "layers[0].bn.eps", "expected a finite number (got nan)",
    ),
    "eps text": (
        CONV2 + "    bn:\n      eps: tiny\n",
        5, 12, "layers[0].bn.eps", "expected a number (got 'tiny')",
    ),
    "bn mode typo": (
        CONV2 + "    bn: {mode: runing}\n",
        4, 16, "layers[0].bn.mode", "did you mean 'running'?",
    ),
    "bn shorthand typo": (
        CONV2 + "    bn: batchy\n",
        4, 9, "layers[0].bn", "expected one of ['batch', 'running'] (got 'batchy')",
    ),
    "running_var negative": (
        CONV2 + "    bn:\n      mode: running\n      running_var: -1\n",
        6, 20, "layers[0].bn.running_var", "variance must be non-negative (got -1.0)",
    ),
    "running_var list with a negative": (
        CONV2 + "    bn:\n      mode: running\n      running_var: [1, -0.5]\n",
        6, 20, "layers[0].bn.running_var", "variance must be non-negative (got [1.0, -0.5])",
    ),
    "running stats with batch mode": (
        CONV2 + "    bn:\n      running_mean: 0.5\n",
        5, 21, "layers[0].bn.running_mean", "only used with mode: running (mode is batch)",
    ),
    "bn weight of wrong length": (
        CONV2 + "    bn:\n      weight: [1, 2, 3]\n",
        5, 15, "layers[0].bn.weight",
        "expected 2 values for bn.weight of layer 'layer1', one per channel (got 3)",
    ),
    "unknown activation": (
        CONV2 + "    activation: gelu\n",
        4, 17, "layers[0].activation",
        "expected one of ['relu', 'leaky_relu', 'none'] (got 'gelu')",
    ),
    "negative_slope without leaky_relu": (
        CONV2 + "    negative_slope: 0.2\n",
        4, 21, "layers[0].negative_slope",
        "only used with activation leaky_relu (activation is 'relu')",
    ),
    "missing layers": (
        "input:\n  color: gray\n", 1, 1, "(top level)", "missing required key 'layers'"
    ),
    "empty layers": (
        "layers: []\n",
        1, 9, "layers", "expected a non-empty list of layers (got an empty list)",
    ),
    "layers a mapping": (
        "layers:\n  conv: {}\n",
        2, 3, "layers", "expected a non-empty list of layers (got a mapping)",
    ),
    "layer without conv": (
        "layers:\n  - bn: batch\n", 2, 5, "layers[0]", "missing required key 'conv'"
    ),
    "null conv": ("layers:\n  - conv:\n", 2, 10, "layers[0].conv", "expected a mapping with keys"),
    "duplicate key": (
        "layers:\n  - conv:\n      out_channels: 2\n      out_channels: 3\n",
        4, 7, "layers[0].conv.out_channels",
        "duplicate key 'out_channels' (first given at c.yaml:3:7)",
    ),
    "duplicate layer name": (
        "layers:\n  - name: a\n    conv: {out_channels: 2}\n"
        "  - name: a\n    conv: {out_channels: 2}\n",
        4, 5, "layers[1]", "duplicate layer name 'a' (also used by layers[0])",
    ),
    "layer name with a slash": (
        "layers:\n  - name: a/b\n    conv: {out_channels: 2}\n",
        2, 11, "layers[0].name", "(used in file names) (got 'a/b')",
    ),
    "input color typo": (
        "input:\n  color: grey\nlayers:\n  - conv: {out_channels: 2}\n",
        2, 10, "input.color", "did you mean 'gray'?",
    ),
    "input std zero": (
        "input:\n  std: 0\nlayers:\n  - conv: {out_channels: 2}\n",
        2, 8, "input.std", "expected a positive number (got 0.0)",
    ),
    "input mean of the wrong length (the image is gray)": (
        "input:\n  mean: [0.4, 0.5]\nlayers:\n  - conv: {out_channels: 2}\n",
        2, 9, "input.mean", "expected 1 value for input.mean, one per channel (got 2)",
    ),
    "groups not dividing the input channels": (
        "layers:\n  - conv: {out_channels: 2, groups: 2}\n",
        2, 37, "layers[0].conv.groups", "groups must divide the input channels (1)",
    ),
    # Tags: the safe composer never constructs objects; any tag but the plain ones is refused.
    "python object tag on a mapping": (
        "layers:\n  - conv: !!python/object:os.system\n      out_channels: 2\n",
        2, 11, "layers[0].conv", "YAML tag 'tag:yaml.org,2002:python/object:os.system' is not",
    ),
    "python apply tag on a sequence": (
        "layers:\n  - conv:\n      out_channels: !!python/object/apply:os.system [touch pwned]\n",
        3, 21, "layers[0].conv.out_channels", "YAML tag 'tag:yaml.org,2002:python/object/apply",
    ),
    "python name tag on a scalar": (
        "layers:\n  - conv:\n      out_channels: !!python/name:os.system ''\n",
        3, 21, "layers[0].conv.out_channels", "YAML tag 'tag:yaml.org,2002:python/name:os.system'",
    ),
    "local tag": (
        "layers:\n  - conv: !weights {out_channels: 2}\n", 2, 11, "layers[0].conv", "tag '!weights'"
    ),
    "omap tag": (
        "layers: !!omap\n  - conv: {out_channels: 2}\n", 1, 9, "layers", "tag:yaml.org,2002:omap"
    ),
    "merge key": (
        "layers:\n  - conv: &c {out_channels: 2}\n  - conv:\n      <<: *c\n      stride: 2\n",
        4, 7, "layers[1].conv.<<", "merge keys ('<<') are not supported",
    ),
    "recursive alias": (
        "layers: &l\n  - conv: {out_channels: 2}\n    bn: *l\n",
        1, 9, "layers[0].bn", "alias refers to a value that contains it",
    ),
    "null key": (
        "layers:\n  - conv:\n      ~: 1\n",
        3, 7, "layers[0].conv.~", "keys must be plain names (got '~')",
    ),
    "key that is not a name": (
        "layers:\n  - conv:\n      [a]: 1\n",
        3, 7, "layers[0].conv", "keys must be plain names (got a mapping or list)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LOCATED), ids=list(LOCATED))
def test_config_error_names_file_line_column_and_key(workdir: Path, case: str) -> None:
    text, line, column, key_path, fragment = LOCATED[case]
    result = run_config(text)
    assert_one_line_error(result, f"c.yaml:{line}:{column}: {key_path}: ", fragment)
    assert not (workdir / "pwned").exists()


SYNTAX = {
    "unclosed flow sequence": ("layers:\n  - conv:\n      out_channels: [2\n", 4, 1),
    "mapping value in a plain scalar": ("layers:\n  - conv: a: b\n", 2, 12),
    "tab indentation": ("layers:\n\t- conv: {}\n", 2, 1),
    "bad indentation": ("layers:\n  - conv:\n      stride: 1\n     padding: 1\n", 4, 6),
}


@pytest.mark.parametrize("case", list(SYNTAX), ids=list(SYNTAX))
def test_yaml_syntax_error_has_line_and_column(workdir: Path, case: str) -> None:
    text, line, column = SYNTAX[case]
    assert_one_line_error(run_config(text), f"c.yaml:{line}:{column}: YAML syntax error: ")


def test_error_location_uses_the_path_as_given(workdir: Path) -> None:
    text = "layers:\n  - conv: {out_channels: 2, stride: x}\n"
    result = run_config(text, name="sub dir/ü.yaml")
    assert_one_line_error(result, "sub dir/ü.yaml:2:37: layers[0].conv.stride: ")


def test_errors_found_when_building_layers_leave_no_folder(workdir: Path) -> None:
    result = run_config(CONV2 + "    bn:\n      weight: [1, 2, 3]\n")
    assert result.exit_code == 2
    assert not Path("out").exists()


# ------------------------------------------------------------- file-level errors


def test_config_file_missing(workdir: Path) -> None:
    result = runner.invoke(app, ["apply", "img.png", "-o", "out", "-c", "nope.yaml"])
    assert_one_line_error(result, "nope.yaml: config file not found")


def test_config_path_is_a_directory(workdir: Path) -> None:
    (workdir / "cfg").mkdir()
    result = runner.invoke(app, ["apply", "img.png", "-o", "out", "-c", "cfg"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "is a directory" in result.stderr
    assert not Path("out").exists()


def test_config_path_is_a_directory_is_a_one_line_error(workdir: Path) -> None:
    (workdir / "cfg").mkdir()
    result = runner.invoke(app, ["apply", "img.png", "-o", "out", "-c", "cfg"])
    assert_one_line_error(result, "cfg: is a directory")


def test_config_not_utf8_names_line_and_column(workdir: Path) -> None:
    text = b"layers:\n  - name: caf\xe9\n    conv: {out_channels: 2}\n"
    assert_one_line_error(run_config(text), "c.yaml:2:14: config file is not UTF-8 text", "0xe9")


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "layers: [{conv: {out_channels: 2}}]\n---\nlayers: []\n"],
    ids=["empty", "comment only", "two documents"],
)
def test_config_must_be_exactly_one_document(workdir: Path, text: str) -> None:
    assert_one_line_error(run_config(text), "c.yaml: expected exactly one YAML document")


@pytest.mark.parametrize(
    "text",
    ["- conv: {}\n", "just text\n", "42\n"],
    ids=["list", "string", "number"],
)
def test_config_top_level_must_be_a_mapping(workdir: Path, text: str) -> None:
    assert_one_line_error(run_config(text), "c.yaml:1:1: (top level): expected a mapping with keys")


def test_alias_expansion_bomb_is_refused_quickly(workdir: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 10**9 values once expanded
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("layers: *a8")
    line = assert_one_line_error(run_config("\n".join(lines) + "\n"), "c.yaml:")
    assert f"more than {MAX_VALUES} values after expanding aliases" in line


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000], ids=["just too deep", "very deep"])
def test_deep_nesting_is_refused(workdir: Path, depth: int) -> None:
    text = "layers: " + "[" * depth + "]" * depth + "\n"
    line = assert_one_line_error(run_config(text), "c.yaml")
    assert f"nested too deeply (more than {MAX_DEPTH} levels)" in line


def test_config_larger_than_the_limit_is_refused(workdir: Path) -> None:
    text = CONV2 + "# " + "x" * (1024 * 1024) + "\n"
    assert_one_line_error(run_config(text), "c.yaml: config file is larger than")


# Characters YAML forbids (YAML 1.1 allows tab, line breaks and printable characters):
# (text, line, column of the bad character, its code point). Counted by hand.
FORBIDDEN_CHARACTERS = {
    "NUL byte": (CONV2 + "\x00\n", 4, 1, "U+0000"),
    "ESC in a quoted name": ('layers:\n  - name: "a\x1bb"\n', 2, 13, "U+001B"),
    "BEL in a comment": ("layers: # \x07\n", 1, 11, "U+0007"),
    "DEL": ("layers:\n  - conv: {out_channels: 2}\x7f\n", 2, 28, "U+007F"),
    "C1 control (UTF-8 encoded)": ("layers:\n  - \u0090\n", 2, 5, "U+0090"),
    "after CRLF line ends": (
        "layers:\r\n  - conv: {out_channels: 2}\r\n  \x00\r\n",
        3,
        3,
        "U+0000",
    ),
}


@pytest.mark.parametrize(
    ("text", "line", "column", "code"), FORBIDDEN_CHARACTERS.values(), ids=FORBIDDEN_CHARACTERS
)
def test_forbidden_character_is_one_line_with_line_and_column(
    workdir: Path, text: str, line: int, column: int, code: str
) -> None:
    # PyYAML's ReaderError has a character offset and a two-line message.
    assert_one_line_error(run_config(text), f"c.yaml:{line}:{column}: character ", code)


def test_utf16_config_is_one_line_error_at_the_first_byte(workdir: Path) -> None:
    text = (CONV2).encode("utf-16")  # starts with the BOM ff fe
    assert_one_line_error(run_config(text), "c.yaml:1:1: config file is not UTF-8 text", "0xff")


@pytest.mark.parametrize(
    "text",
    [
        "layers:\n  - conv: [1\n",  # parser: with a context ("while parsing a flow sequence")
        "layers:\n  - conv: {out_channels: 2}\n  x\n y: 1\n",  # scanner
        "layers:\n\t- conv: {}\n",  # a tab where indentation is expected
        "layers: *missing\n",  # composer: undefined alias
        "layers: [a, &x b, &x c]\nkey: [*x, *y]\n",
    ],
    ids=["parser", "scanner", "tab", "undefined alias", "second undefined alias"],
)
def test_every_yaml_syntax_error_is_one_line_with_line_and_column(workdir: Path, text: str) -> None:
    line = assert_one_line_error(run_config(text), "c.yaml:")
    assert re.match(r"error: c\.yaml:\d+:\d+: YAML syntax error: \S", line), line


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: os.symlink("/dev/null", p), "a character device"),
    ],
    ids=["directory", "device"],  # a FIFO: in a subprocess below (it used to hang)
)
def test_config_that_is_not_a_regular_file_says_what_it_is(
    workdir: Path, make: Callable[[Path], None], what: str
) -> None:
    make(workdir / "c.yaml")
    result = runner.invoke(app, ["apply", "img.png", "-o", "out", "-c", "c.yaml"])
    assert_one_line_error(result, f"c.yaml: is {what}, not a regular file")


def run_cbr_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``cbr ARGS`` in a subprocess with at most 2 GiB of address space and 60 s.

    The limits make the unbounded reads this guards against fail (MemoryError, a
    traceback) or time out instead of hanging the test run; both are generous for cbr.
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [sys.executable, "-m", "cbr_cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("config", ["fifo.yaml", "/dev/zero", "/dev/urandom"])
def test_config_fifo_or_endless_device_fails_at_once(workdir: Path, config: str) -> None:
    # Used to block in open() (a FIFO without a writer) or read until memory ran out.
    os.mkfifo(workdir / "fifo.yaml")
    start = time.monotonic()
    try:
        result = run_cbr_limited(["apply", "img.png", "-o", "out", "-c", config], workdir)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cbr apply -c {config} hung")
    assert time.monotonic() - start < 30
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    what = "a FIFO" if config == "fifo.yaml" else "a character device"
    assert result.stderr == f"error: {config}: is {what}, not a regular file " + (
        "(expected a YAML config file)\n"
    )


# ------------------------------------------------------------------ .npy files


def write_npy(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def test_weight_path_is_relative_to_the_config_file(workdir: Path) -> None:
    # The config lives in cfg/; a w.npy in the working directory must not be found.
    write_npy(workdir / "w.npy", np.ones((2, 1, 3, 3), np.float32))
    result = run_config("layers:\n  - conv: {weight: w.npy}\n", name="cfg/c.yaml")
    line = assert_one_line_error(result, "cfg/c.yaml:2:20: layers[0].conv.weight: file not found")
    assert str(workdir / "cfg" / "w.npy") in line


def test_weight_npy_with_the_wrong_shape_names_key_and_expected_shape(workdir: Path) -> None:
    # 3 input channels in the file, but img.png is gray (1 channel).
    write_npy(workdir / "cfg" / "w.npy", np.ones((2, 3, 3, 3), np.float32))
    result = run_config("layers:\n  - conv: {weight: w.npy}\n", name="cfg/c.yaml")
    assert_one_line_error(
        result,
        "cfg/c.yaml:2:20: layers[0].conv.weight: ",
        "(2, 1, 3, 3) for 1 input channel(s)",
        "(got (2, 3, 3, 3)",
    )


def test_weight_npy_must_be_4d(workdir: Path) -> None:
    write_npy(workdir / "w.npy", np.ones((3, 3), np.float32))
    result = run_config("layers:\n  - conv: {weight: w.npy}\n")
    assert_one_line_error(
        result,
        "c.yaml:2:20: layers[0].conv.weight: expected an array of shape",
        "(got shape (3, 3))",
    )


def test_weight_npy_that_is_text(workdir: Path) -> None:
    (workdir / "w.npy").write_text("1 2 3\n")
    result = run_config("layers:\n  - conv: {weight: w.npy}\n")
    assert_one_line_error(
        result, "c.yaml:2:20: layers[0].conv.weight: ", "is not a .npy file (no NumPy header)"
    )


def test_weight_npy_with_pickled_objects_is_not_loaded(workdir: Path) -> None:
    array = np.empty((2, 1, 1, 1), dtype=object)
    np.save(workdir / "w.npy", array, allow_pickle=True)
    result = run_config("layers:\n  - conv: {weight: w.npy}\n")
    assert_one_line_error(result, "c.yaml:2:20: layers[0].conv.weight: ", "Python objects")


def test_weight_path_must_end_in_npy(workdir: Path) -> None:
    result = run_config("layers:\n  - conv: {weight: w.txt}\n")
    assert_one_line_error(result, "c.yaml:2:20: layers[0].conv.weight: expected a .npy file")


def test_running_mean_npy_of_the_wrong_length(workdir: Path) -> None:
    write_npy(workdir / "m.npy", np.zeros(3, np.float32))
    text = CONV2 + "    bn: {mode: running, running_mean: m.npy}\n"
    assert_one_line_error(
        run_config(text),
        "c.yaml:4:39: layers[0].bn.running_mean: ",
        "must have shape (2,), one value per channel (got (3,) in",
    )


def test_running_var_npy_with_a_negative_value(workdir: Path) -> None:
    write_npy(workdir / "v.npy", np.array([1.0, -1.0], np.float32))
    text = CONV2 + "    bn: {mode: running, running_var: v.npy}\n"
    assert_one_line_error(
        run_config(text), "c.yaml:4:38: layers[0].bn.running_var: running_var must be non-negative"
    )


@pytest.mark.parametrize("key", ["weight", "bias"])
@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: os.mkfifo(p), "a FIFO"),
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: os.symlink("/dev/zero", p), "a character device"),
    ],
    ids=["fifo", "directory", "device"],
)
def test_npy_path_that_is_not_a_regular_file_says_what_it_is(
    workdir: Path, make: Callable[[Path], None], what: str, key: str
) -> None:
    # It used to be "file not found" (os.path.isfile), which sends the user looking
    # for a missing file.
    make(workdir / "p.npy")
    if key == "weight":
        text, column = "layers:\n  - conv: {weight: p.npy}\n", 20
    else:
        text, column = "layers:\n  - conv: {out_channels: 2, bias: p.npy}\n", 35
    assert_one_line_error(
        run_config(text),
        f"c.yaml:2:{column}: layers[0].conv.{key}: is {what}, not a regular file",
        str(workdir / "p.npy"),
    )


def test_npy_data_beyond_the_checked_shape_is_not_read(workdir: Path, monkeypatch) -> None:
    # The header is checked before the data is read: a running_mean.npy with a
    # million values for a 2-channel layer is refused without loading them (even
    # past the header-only check that normally catches it first).
    write_npy(workdir / "m.npy", np.zeros(1_000_000, np.float32))
    from cbr_cli.run.pipeline import resolve_param
    from cbr_cli.spec.pipeline_types import ParamSource

    source = ParamSource(str(workdir / "m.npy"), "here")
    monkeypatch.setattr(ParamSource, "check", lambda self, channels, what: None)
    tracemalloc.start()
    try:
        with pytest.raises(CbrError, match=r"must have shape \(2,\) \(got \(1000000,\)\)"):
            resolve_param(source, 2, "running_mean")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the data alone is 4 MB


# --------------------------------------------------------------- accepted values


def spec_of(text: str, tmp_path: Path, flags: LayerFlags | None = None) -> PipelineSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return build_spec(path, flags or LayerFlags())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-5", 1e-5), ("1.0e-5", 1e-5), ("0.001", 1e-3), ("1E-3", 1e-3), ('"2e-4"', 2e-4)],
)
def test_eps_in_any_float_spelling(tmp_path: Path, text: str, expected: float) -> None:
    # YAML 1.1 (PyYAML) reads 1e-5 as the string "1e-5": it must still mean 1e-5.
    spec = spec_of(CONV2 + f"    bn:\n      eps: {text}\n", tmp_path)
    assert spec.layers[0].bn is not None
    assert spec.layers[0].bn.eps == expected


def test_anchor_and_alias_reuse_a_conv(tmp_path: Path) -> None:
    text = (
        "layers:\n"
        "  - conv: &c {out_channels: 4, kernel_size: [3, 5], padding: same, stride: [2, 1]}\n"
        "  - conv: *c\n"
    )
    spec = spec_of(text, tmp_path)
    first, second = spec.layers
    assert first.conv.kernel_size == second.conv.kernel_size == (3, 5)
    assert first.conv.stride == second.conv.stride == (2, 1)
    assert first.conv.padding == second.conv.padding == "same"
    assert (first.conv.seed, second.conv.seed) == (0, 1)  # default seed: the layer index


def test_alias_error_names_the_path_where_it_is_used(tmp_path: Path) -> None:
    text = "layers:\n  - conv: &c {out_channels: 2}\n  - conv: *c\n    bn: {eps: -1}\n"
    with pytest.raises(CbrError, match=r"spec.yaml:4:\d+: layers\[1\]\.bn\.eps: "):
        spec_of(text, tmp_path)


@pytest.mark.parametrize(
    ("bn", "mode"),
    [("batch", "batch"), ("running", "running"), ("true", "batch"), ("{}", "batch")],
)
def test_bn_shorthands(tmp_path: Path, bn: str, mode: str) -> None:
    spec = spec_of(CONV2 + f"    bn: {bn}\n", tmp_path)
    assert spec.layers[0].bn is not None
    assert spec.layers[0].bn.mode == mode


@pytest.mark.parametrize("bn", ["null", "false", "off", "none", ""])
def test_bn_off_spellings(tmp_path: Path, bn: str) -> None:
    assert spec_of(CONV2 + f"    bn: {bn}\n", tmp_path).layers[0].bn is None


def test_utf8_bom_and_crlf_line_ends_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbflayers:\r\n  - conv:\r\n      out_channels: 3\r\n")
    assert build_spec(path, LayerFlags()).layers[0].conv.out_channels == 3


def test_digits_as_strings_are_integers(tmp_path: Path) -> None:
    spec = spec_of(CONV2 + '      padding: "2"\n      stride: ["1", 2]\n', tmp_path)
    assert spec.layers[0].conv.padding == (2, 2)
    assert spec.layers[0].conv.stride == (1, 2)


def test_resolved_pipeline_loads_back_to_itself(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.ones((2, 1, 3, 3), np.float32))
    text = (
        "input: {color: gray, mean: 0.5, std: [0.25]}\n"
        "layers:\n"
        "  - name: stem\n"
        "    conv: {weight: w.npy, padding: same, padding_mode: reflect, bias: [0.1, 0.2]}\n"
        "    bn: {mode: running, running_mean: [0, 1], running_var: 2, weight: 1.5}\n"
        "    activation: leaky_relu\n"
        "    negative_slope: 0.2\n"
        "  - conv: {kernels: [sobel, box:5], dilation: 2}\n"
        "    activation: none\n"
        "  - conv: {out_channels: 3, init: xavier_uniform, seed: 7, groups: 3, bias: false}\n"
        "    bn: batch\n"
    )
    spec = spec_of(text, tmp_path)
    plain = spec.to_plain()
    reloaded = parse_pipeline(from_plain(plain, "manifest"), "manifest")
    assert reloaded.to_plain() == plain
    assert reloaded.layers[0].conv.weight == str(tmp_path / "w.npy")
    # It survives a trip through YAML text as well.
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(plain), encoding="utf-8")
    assert build_spec(again, LayerFlags()).to_plain() == plain


def test_load_yaml_keeps_positions(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("layers:\n  - conv:\n      stride: [1, 2]\n", encoding="utf-8")
    root = load_yaml(path)
    stride = root.data["layers"].data[0].data["conv"].data["stride"]
    assert isinstance(stride, Value)
    assert stride.where == f"{path}:3:15: layers[0].conv.stride"
    assert stride.data[1].where == f"{path}:3:19: layers[0].conv.stride[1]"
    assert stride.plain() == [1, 2]


# ----------------------------------------------------------------- flags only


def test_no_flags_is_the_demo_pipeline() -> None:
    spec = build_spec(None, LayerFlags())
    (layer,) = spec.layers
    assert layer.conv.kernels is not None
    assert "sobel_x" in layer.conv.kernels
    assert layer.bn is not None
    assert layer.bn.mode == "batch"
    assert layer.activation == "relu"
    assert spec.source == "flags"


def test_random_weights_from_flags_take_pytorch_defaults() -> None:
    spec = build_spec(None, LayerFlags(kernel_size="5x3", seed=4))
    conv = spec.layers[0].conv
    assert (conv.out_channels, conv.kernel_size, conv.seed) == (8, (5, 3), 4)
    assert (conv.stride, conv.padding, conv.dilation, conv.groups) == ((1, 1), (0, 0), (1, 1), 1)
    assert conv.bias is True
    assert conv.init == "kaiming_uniform"


FLAG_ERRORS = {
    "--bn foo": (LayerFlags(bn="foo"), "--bn: expected one of ['batch', 'running', 'off']"),
    "--bn of": (LayerFlags(bn="of"), "did you mean 'off'?"),
    "--bn off --eps": (LayerFlags(bn="off", eps="1e-3"), "--eps: has no effect with --bn off"),
    "--bn off --momentum": (
        LayerFlags(bn="off", momentum="0.5"), "--momentum: has no effect with --bn off"
    ),
    "--negative-slope with relu": (
        LayerFlags(negative_slope="0.2"),
        "--negative-slope: only used with activation leaky_relu (activation is 'relu')",
    ),
    "--stride 1,": (
        LayerFlags(stride="1,"), "--stride: expected N or HxW with integers (got '1,')"
    ),
    "--kernel names and npy": (
        LayerFlags(kernel=["sobel", "w.npy"]), "--kernel: give either one .npy weight file"
    ),
    "--kernel typo": (LayerFlags(kernel=["sobelx"]), "--kernel: unknown kernel 'sobelx'"),
    "--out-channels with --kernel": (
        LayerFlags(kernel=["sobel"], out_channels=3),
        "--out-channels: does not match the kernels given (2 output channels) (got 3)",
    ),
    "--seed with --kernel": (
        LayerFlags(kernel=["sobel"], seed=1), "--seed: 'init'/'seed' apply to random weights"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FLAG_ERRORS), ids=list(FLAG_ERRORS))
def test_flag_errors_name_the_flag(case: str) -> None:
    flags, message = FLAG_ERRORS[case]
    with pytest.raises(CbrError) as info:
        build_spec(None, flags)
    assert message in info.value.message
    assert info.value.exit_code == 2


# Integers out of range, from YAML and from flags: (command-line arguments, message).
HUGE = "99999999999999999999"  # > 2**64: numpy raised OverflowError on it
SIDE = f"expected a positive integer from 1 to {MAX_SIDE}"
CHANNELS = f"expected a positive integer from 1 to {MAX_CHANNELS}"
OUT_OF_RANGE = {
    "kernel_size: 10**12": (
        ["-c", "c.yaml"],
        f"c.yaml:2:42: layers[0].conv.kernel_size: {SIDE} (got 1000000000000)",
    ),
    "--stride HUGE": (["--stride", HUGE], f"--stride: {SIDE} (got {HUGE})"),
    "--stride 1xHUGE": (["--stride", f"1x{HUGE}"], f"--stride: {SIDE} (got {HUGE})"),
    "--dilation HUGE --padding same": (
        ["--dilation", HUGE, "--padding", "same"], f"--dilation: {SIDE} (got {HUGE})"
    ),
    "--padding HUGE": (
        ["--padding", HUGE], f"--padding: expected a non-negative integer from 0 to {MAX_SIDE}"
    ),
    "--kernel-size 65537": (["--kernel-size", "65537"], f"--kernel-size: {SIDE} (got 65537)"),
    "--out-channels HUGE": (["--out-channels", HUGE], f"--out-channels: {CHANNELS} (got {HUGE})"),
    "--groups HUGE": (["--groups", HUGE], f"--groups: {CHANNELS} (got {HUGE})"),
    "--seed 2**64": (
        ["--out-channels", "2", "--seed", str(2**64)],
        f"--seed: expected a non-negative integer from 0 to {2**64 - 1} (got {2**64})",
    ),
    "--resize HUGExHUGE": (["--resize", f"{HUGE}x{HUGE}"], "pixels is more than the"),
    "--stride 2x(superscript 2)": (["--stride", "2x²"], "--stride: expected N or HxW"),
    "--resize 2x(superscript 2)": (["--resize", "2x²"], "--resize: expected HxW with positive"),
    "--stride with 5000 digits": (["--stride", "9" * 5000 + "x1"], "(5002 characters)"),
}  # fmt: skip


@pytest.mark.parametrize(("args", "message"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE)
def test_integers_are_bounded_when_parsed(workdir: Path, args: list[str], message: str) -> None:
    # Each used to be a traceback (ValueError, OverflowError or TypeError from numpy).
    Path("c.yaml").write_text("layers:\n  - conv: {out_channels: 2, kernel_size: 1000000000000}\n")
    result = runner.invoke(app, ["apply", "img.png", "-o", "out", *args])
    line = assert_one_line_error(result, "")
    assert message in line, line


def test_integer_beyond_pythons_digit_limit_in_yaml(workdir: Path) -> None:
    text = "layers:\n  - conv: {out_channels: " + "9" * 5000 + "}\n"
    assert_one_line_error(
        run_config(text), "c.yaml:2:26: layers[0].conv.out_channels: cannot read", "as a number"
    )


@pytest.mark.parametrize(
    "shape", [(0, 1, 3, 3), (2, 0, 3, 3), (2, 1, 0, 3), (2, 1, 3, 0)], ids=["O", "I", "kH", "kW"]
)
def test_weight_npy_with_a_zero_size_is_refused_before_any_output(workdir: Path, shape) -> None:
    # 0 output channels used to pass validation and fail in render (a ValueError)
    # after input.png was written.
    write_npy(workdir / "w.npy", np.zeros(shape, np.float32))
    assert_one_line_error(
        run_config("layers:\n  - conv: {weight: w.npy}\n"),
        "c.yaml:2:20: layers[0].conv.weight: every size of (out_channels, in_channels/groups, "
        f"kH, kW) must be at least 1 (got shape {shape})",
    )
    assert not Path("out").exists()


def test_batch_with_an_out_of_range_flag_is_one_error_and_no_worker_runs(workdir: Path) -> None:
    Path("in").mkdir()
    for name in ("a", "b", "c"):
        Image.open("img.png").save(f"in/{name}.png")
    result = runner.invoke(app, ["batch", "in", "-o", "out", "--jobs", "2", "--stride", HUGE])
    assert_one_line_error(result, f"--stride: expected a positive integer from 1 to {MAX_SIDE}")


# ------------------------------------------------------- flags overriding -c


ONE_LAYER = (
    "layers:\n"
    "  - name: only\n"
    "    conv: {out_channels: 4, kernel_size: 5, padding: 2, seed: 3}\n"
    "    bn: {mode: running, running_mean: 0.5, running_var: [1, 2, 3, 4], eps: 0.01}\n"
    "    activation: leaky_relu\n"
    "    negative_slope: 0.3\n"
)


def test_flag_overrides_one_key_and_keeps_the_rest(tmp_path: Path) -> None:
    spec = spec_of(ONE_LAYER, tmp_path, LayerFlags(stride="2"))
    layer = spec.layers[0]
    assert layer.conv.stride == (2, 2)
    assert (layer.conv.out_channels, layer.conv.kernel_size) == (4, (5, 5))
    assert (layer.conv.padding, layer.conv.seed) == ((2, 2), 3)
    assert layer.name == "only"
    assert layer.negative_slope == 0.3
    assert spec.source == str(tmp_path / "spec.yaml")


def test_eps_flag_keeps_the_configs_running_mode(tmp_path: Path) -> None:
    bn = spec_of(ONE_LAYER, tmp_path, LayerFlags(eps="1e-3")).layers[0].bn
    assert bn is not None
    assert (bn.mode, bn.eps) == ("running", 1e-3)
    assert bn.running_mean is not None
    assert bn.running_mean.value == 0.5


def test_momentum_flag_keeps_a_shorthand_running_mode(tmp_path: Path) -> None:
    spec = spec_of(CONV2 + "    bn: running\n", tmp_path, LayerFlags(momentum="0.5"))
    bn = spec.layers[0].bn
    assert bn is not None
    assert (bn.mode, bn.momentum) == ("running", 0.5)


def test_eps_flag_on_a_layer_without_bn_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CbrError, match=r"^--eps: the config's layer has no bn; give --bn"):
        spec_of(CONV2, tmp_path, LayerFlags(eps="1e-3"))


def test_bn_batch_flag_drops_the_running_statistics(tmp_path: Path) -> None:
    bn = spec_of(ONE_LAYER, tmp_path, LayerFlags(bn="batch")).layers[0].bn
    assert bn is not None
    assert (bn.mode, bn.eps, bn.running_mean, bn.running_var) == ("batch", 0.01, None, None)


def test_bn_off_flag_removes_the_bn(tmp_path: Path) -> None:
    assert spec_of(ONE_LAYER, tmp_path, LayerFlags(bn="off")).layers[0].bn is None


def test_bn_flag_adds_a_bn(tmp_path: Path) -> None:
    bn = spec_of(CONV2, tmp_path, LayerFlags(bn="running", eps="0.1")).layers[0].bn
    assert bn is not None
    assert (bn.mode, bn.eps) == ("running", 0.1)


def test_kernel_flag_replaces_the_weight_source_and_its_shape(tmp_path: Path) -> None:
    conv = spec_of(ONE_LAYER, tmp_path, LayerFlags(kernel=["sobel"])).layers[0].conv
    assert conv.kernels == ("sobel_x", "sobel_y")
    assert (conv.out_channels, conv.kernel_size) == (2, (3, 3))
    assert conv.padding == (2, 2)  # not part of the weight source: kept


def test_kernel_flag_running_stats_of_the_old_width_are_reported(tmp_path: Path) -> None:
    # 4 running variances in the file, but -k sobel makes 2 channels: the file is wrong now.
    spec = spec_of(ONE_LAYER, tmp_path, LayerFlags(kernel=["sobel"]))
    from cbr_cli.run.pipeline import build_layers

    with pytest.raises(CbrError, match=r"spec.yaml:4:\d+: layers\[0\]\.bn\.running_var: "):
        build_layers(spec, 1)


def test_activation_flag_drops_the_configs_negative_slope(tmp_path: Path) -> None:
    layer = spec_of(ONE_LAYER, tmp_path, LayerFlags(activation="relu")).layers[0]
    assert layer.activation == "relu"


def test_negative_slope_flag_on_a_relu_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CbrError, match=r"^--negative-slope: only used with activation leaky"):
        spec_of(CONV2, tmp_path, LayerFlags(negative_slope="0.1"))


def test_layer_flag_with_several_layers_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    text = CONV2 + "  - conv: {out_channels: 2}\n"
    with pytest.raises(CbrError) as info:
        spec_of(text, tmp_path, LayerFlags(padding="same"))
    assert info.value.message == (
        f"--padding: layer flags override a config with exactly one layer, but "
        f"{tmp_path / 'spec.yaml'} has 2 layers; edit the file instead"
    )


def test_color_flag_overrides_any_config(tmp_path: Path) -> None:
    text = "input: {color: rgb}\n" + CONV2 + "  - conv: {out_channels: 2}\n"
    assert spec_of(text, tmp_path, LayerFlags(color="gray")).input.color == "gray"
    assert spec_of(CONV2, tmp_path, LayerFlags(color="rgb")).input.color == "rgb"


def test_flag_values_are_validated_like_yaml_values(tmp_path: Path) -> None:
    with pytest.raises(CbrError, match=r"^--stride: expected a positive integer \(got 0\)$"):
        spec_of(ONE_LAYER, tmp_path, LayerFlags(stride="0"))


def test_flags_override_through_the_cli(workdir: Path) -> None:
    result = run_config(ONE_LAYER, "--stride", "2", "--json")
    assert result.exit_code == 0, result.stderr
    import json

    stages = json.loads(result.stdout)["images"][0]["stages"]
    # 12x10 input, kernel 5, padding 2, stride 2: floor((12 + 4 - 5) / 2) + 1 = 6, 5.
    assert {tuple(s["shape"]) for s in stages} == {(4, 6, 5)}
    assert [s["stage"] for s in stages] == ["conv", "bn", "act"]
    assert math.isclose(stages[1]["channels"][0]["bn_mean"], 0.5)


def test_layer_flag_with_a_multi_layer_config_through_the_cli(workdir: Path) -> None:
    result = run_config(CONV2 + "  - conv: {out_channels: 2}\n", "--kernel-size", "5")
    assert_one_line_error(result, "--kernel-size: layer flags override a config with exactly one")


@pytest.mark.parametrize("bn", ["off", "false", "null", "{mode: off}", "{mode: none}"])
def test_bn_can_be_switched_off_in_every_spelling(bn: str) -> None:
    from cbr_cli.spec.pipeline_spec import parse_pipeline
    from cbr_cli.spec.yaml_reader import load_yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(
            f"layers:\n  - conv: {{out_channels: 2}}\n    bn: {bn}\n    activation: off\n"
        )
        layer = parse_pipeline(load_yaml(path), str(path)).layers[0]
    assert layer.bn is None and layer.activation == "none"


def test_bn_mode_off_with_other_keys_is_refused(workdir: Path) -> None:
    text = "layers:\n  - conv: {out_channels: 2}\n    bn: {mode: off, eps: 0.1}\n"
    assert_one_line_error(run_config(text), "c.yaml:3:26: layers[0].bn.eps: ", "BatchNorm is off")
