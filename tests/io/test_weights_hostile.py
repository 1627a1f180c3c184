"""Hostile and broken weight files: each a one-line CbrError naming the file, nothing run,
no allocation of what a header declares."""

from __future__ import annotations

import json
import os
import struct
import zipfile

import numpy as np
import pytest

from cbr_cli.errors import CbrError
from cbr_cli.io.weights import read_model, read_tensors
from tests.io.weights_helpers import FIXTURES

TEN_GB_SHAPE = [50_000, 50_000]  # 2.5e9 float32 = 10 GB


def one_line_error(path, *args, match: str, **kwargs) -> str:
    with pytest.raises(CbrError) as info:
        read_tensors(str(path), *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert __import__("re").search(match, message), message
    return message


def torch_zip(path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)


def protocol0_call(module: str, name: str, argument: str) -> bytes:
    """A pickle that calls ``module.name(argument)`` when loaded by an unrestricted unpickler."""
    return f"c{module}\n{name}\n(S'{argument}'\ntR.".encode()


@pytest.mark.parametrize(
    ("module", "name"),
    [("os", "system"), ("posix", "system"), ("subprocess", "check_call"), ("nt", "system")],
)
def test_pickle_calling_a_shell_is_refused_and_not_run(tmp_path, module, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch_zip(path, protocol0_call(module, name, f"touch {marker}"))
    # The payload is real: an unrestricted pickle.loads would create the marker.
    message = one_line_error(path, match=rf"refused to load the global '{module}\.{name}'")
    assert "nothing was run" in message
    assert not marker.exists()


def test_pickle_referencing_builtins_eval_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    code = f"open({str(marker)!r}, 'w').close()"
    torch_zip(path, f'cbuiltins\neval\n(S"{code}"\ntR.'.encode())
    one_line_error(path, match=r"refused to load the global 'builtins\.eval'")
    assert not marker.exists()


def test_stack_global_protocol4_is_refused(tmp_path):
    """Protocol 4 names globals with STACK_GLOBAL; find_class still sees every one."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.bin"
    torch_zip(path, pickle.dumps({"w": Payload()}, protocol=4))
    one_line_error(path, match=r"refused to load the global '(posix|os|nt)\.system'")


def test_build_on_a_storage_type_is_refused(tmp_path):
    """BUILD (setting state) on an allowed torch global must not mutate cbr's stand-ins."""
    path = tmp_path / "evil.pth"
    torch_zip(path, b"ctorch\nFloatStorage\n}(S'numpy'\nS'O'\nub.")
    one_line_error(path, match=r"not a loadable state_dict pickle \(BUILD")
    ok = read_tensors(str(FIXTURES / "model.pth"), names=["conv1.weight"])
    assert ok.tensors["conv1.weight"].dtype == np.float32


def test_truncated_zip(tmp_path):
    data = (FIXTURES / "model.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    one_line_error(path, match=r"not a readable zip archive, truncated\?")


def test_legacy_pickle_gets_a_conversion_hint(tmp_path):
    path = tmp_path / "old.pth"
    path.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")  # torch's legacy magic
    one_line_error(path, match=r"legacy \(non-zip\) torch\.save pickle; .*weights_only=True")


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def state_pickle(
    numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0
) -> bytes:
    """A protocol-2 pickle of ``{"w": tensor}`` exactly as torch.save writes one (opcodes
    by hand: no torch here), the storage ``archive/data/0`` of ``numel`` float32."""
    ordered_dict = b"ccollections\nOrderedDict\n)R"
    pid = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu")
    pid += _int(numel) + b"tQ"  # TUPLE, BINPERSID
    args = b"(" + pid + _int(offset) + _ints(size) + _ints(stride) + b"\x89" + ordered_dict + b"t"
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    return b"\x80\x02" + ordered_dict + b"(" + _text("w") + rebuild + b"u."


def test_hand_made_state_pickle_is_what_the_reader_expects(tmp_path):
    """The opcode helper above is right: a consistent file reads back."""
    path = tmp_path / "ok.pth"
    torch_zip(path, state_pickle(4, (2, 2), (1, 2)), {"0": np.arange(4, dtype="<f4").tobytes()})
    got = read_tensors(str(path)).get("w", (2, 2))
    np.testing.assert_array_equal(got, np.arange(4, dtype=np.float32).reshape(2, 2).T)


def test_torch_storage_declared_10gb_in_a_small_file(tmp_path):
    """A pickle declaring a 2.5e9-element storage: refused before any allocation."""
    path = tmp_path / "big.pth"
    torch_zip(path, state_pickle(2_500_000_000, (2_500_000_000,), (1,)), {"0": b"\0" * 16})
    assert path.stat().st_size < 1024
    one_line_error(path, match=r"w: needs 10000000000 bytes, beyond the limit")
    # With no limit the declared size is still never allocated: reading stops at the data.
    one_line_error(
        path, match=r"holds 16 bytes, the pickle declares 2500000000 x 4", max_bytes=1 << 40
    )


def test_torch_storage_shorter_than_declared(tmp_path):
    path = tmp_path / "short.pth"
    torch_zip(path, state_pickle(8, (8,), (1,)), {"0": b"\0" * 16})
    one_line_error(
        path, match=r"w: storage archive/data/0 holds 16 bytes, the pickle declares 8 x 4"
    )


def test_tensor_reaching_past_its_storage(tmp_path):
    path = tmp_path / "strided.pth"
    torch_zip(path, state_pickle(4, (4,), (2,)), {"0": b"\0" * 16})
    one_line_error(path, match=r"reaches element 6 of a storage of 4")


def safetensors_file(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_safetensors_header_lying_about_offsets(tmp_path):
    path = tmp_path / "lie.safetensors"
    safetensors_file(
        path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, b"\0" * 16
    )
    one_line_error(path, match=r": w: data_offsets \[0, 64\] run past the data \(16 bytes")


def test_safetensors_shape_disagreeing_with_offsets(tmp_path):
    path = tmp_path / "lie.safetensors"
    safetensors_file(
        path, {"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}}, b"\0" * 16
    )
    one_line_error(
        path, match=r"w: shape \(8,\) of F32 needs 32 bytes, but data_offsets \[0, 16\] hold 16"
    )


def test_safetensors_header_length_beyond_the_file(tmp_path):
    path = tmp_path / "lie.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    # Detected as a safetensors file only by its suffix-free magic: the length is checked.
    with pytest.raises(CbrError, match=r"not a weight file cbr reads|header declares"):
        read_tensors(str(path))


def test_safetensors_declared_10gb_tensor_in_1kb(tmp_path):
    path = tmp_path / "big.safetensors"
    header = {"w": {"dtype": "F32", "shape": TEN_GB_SHAPE, "data_offsets": [0, 10_000_000_000]}}
    safetensors_file(path, header, b"\0" * 64)
    assert path.stat().st_size < 1024
    one_line_error(path, match=r"w: data_offsets \[0, 10000000000\] run past the data")


def test_npz_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}, str(marker)], dtype=object))
    one_line_error(path, match=r"w: holds Python objects \(a pickle\); refused")
    assert not marker.exists()


def test_npz_declared_10gb_array_in_1kb(tmp_path):
    path = tmp_path / "big.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": tuple(TEN_GB_SHAPE)}
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", np.lib.format.magic(1, 0) + buffer.getvalue()[8:] + b"\0" * 64)
    assert path.stat().st_size < 1024
    one_line_error(path, match=r"w: needs 10000000000 bytes, beyond the limit")
    one_line_error(path, match=r"w: .*10000000000 bytes", max_bytes=1 << 40)


def test_budget_bounds_a_real_file(tmp_path):
    one_line_error(FIXTURES / "model.pth", match=r"conv1\.weight: needs 4704 bytes", max_bytes=1000)


def test_random_bytes_and_empty_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(512).replace(b"\x80", b"\x81").replace(b"PK", b"pk"))
    one_line_error(junk, match=r"not a weight file cbr reads")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    one_line_error(empty, match=r"file is empty")


def test_directory_and_fifo_are_refused(tmp_path):
    one_line_error(tmp_path, match=r"is a directory")
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    one_line_error(fifo, match=r"is a FIFO, not a regular file")  # and does not hang
    one_line_error(tmp_path / "missing.pth", match=r"no such file")


def test_onnx_garbage_is_one_line(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\xff\xff\xff\xff" * 16)
    with pytest.raises(CbrError, match=r"bad\.onnx: not a valid ONNX model") as info:
        read_model(str(path))
    assert "\n" not in str(info.value)


def test_keras_truncated_hdf5(tmp_path):
    data = (FIXTURES / "model.h5").read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[:3000])
    with pytest.raises(CbrError, match=r"cut\.h5: ") as info:
        read_model(str(path))
    assert "\n" not in str(info.value)
