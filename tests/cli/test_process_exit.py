"""How the ``cbr`` process ends (cbr_cli.cli.process_exit): what the interpreter does at
exit -- threads joined, atexit callbacks, buffers flushed, the exit status -- all still
happens without its teardown; output that cannot be written is one line, no traceback.

Every case runs in a fresh interpreter: ``leave`` ends the process it runs in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cbr_cli import __version__
from tests.helpers import REPO

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as a user's


def _cbr_code(*args: str) -> str:
    """Python source running ``cbr ARGS`` through the console-script entry point."""
    return f"import sys; sys.argv = ['cbr', *{list(args)!r}]; from cbr_cli.cli import main; main()"


def _python(code: str, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
        env=ENV,
        **kwargs,
    )


def test_leave_runs_atexit_joins_threads_flushes_and_keeps_the_status(tmp_path: Path) -> None:
    done = tmp_path / "thread-done"
    result = _python(
        f"""
        import atexit, sys, threading, time
        from cbr_cli.cli.process_exit import leave

        def late():
            time.sleep(0.3)
            open({str(done)!r}, "w").close()

        threading.Thread(target=late).start()  # non-daemon: the exit waits for it
        atexit.register(lambda: print("atexit ran"))
        print("buffered", end="")
        sys.stderr.write("to stderr")
        leave(3)
        """
    )
    assert result.returncode == 3
    assert result.stdout == "bufferedatexit ran\n"  # flushed after the atexit callbacks
    assert result.stderr == "to stderr"
    assert done.exists()


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [("None", 0, ""), ("0", 0, ""), ("2", 2, ""), ("'a message'", 1, "a message\n")],
)
def test_leave_maps_exit_codes_as_the_interpreter_does(code: str, status: int, stderr: str) -> None:
    result = _python(f"from cbr_cli.cli.process_exit import leave; leave({code})")
    assert (result.returncode, result.stderr) == (status, stderr)


def test_leave_skips_the_teardown() -> None:
    # An object whose __del__ runs only when the interpreter tears its modules down.
    result = _python(
        """
        from cbr_cli.cli.process_exit import leave

        class Noisy:
            def __del__(self):
                print("torn down")

        keep = Noisy()
        leave(0)
        """
    )
    assert (result.returncode, result.stdout) == (0, "")


def _cbr(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return _python(_cbr_code(*args), **kwargs)


def test_cbr_exit_statuses_and_output_are_kept() -> None:
    version = _cbr("--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, f"cbr {__version__}\n", "")
    error = _cbr("apply", "/no/such/image.png")
    assert error.returncode == 2
    assert error.stdout == ""
    assert error.stderr.startswith("error: ") and len(error.stderr.splitlines()) == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("--version",), ("kernels",)])
def test_a_full_disk_for_stdout_is_one_line_not_a_traceback(args: tuple[str, ...]) -> None:
    with open("/dev/full", "w") as full:
        result = _cbr(*args, stdout=full)
    assert result.returncode == 1
    assert result.stderr == "error: cannot write the output: No space left on device\n"


def test_a_reader_that_goes_away_is_silent() -> None:
    # `cbr kernels | true`: the pipe is closed before cbr writes (it is still importing).
    cbr = subprocess.Popen(
        [sys.executable, "-c", _cbr_code("kernels")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**ENV, "COLUMNS": "100"},
    )
    assert cbr.stdout is not None and cbr.stderr is not None
    cbr.stdout.close()
    stderr = cbr.stderr.read().decode()
    assert cbr.wait(timeout=60) == 1  # as Click exits for a broken pipe
    assert stderr == ""


def test_an_os_error_naming_a_file_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    from cbr_cli.cli.process_exit import output_failed

    error = OSError(28, "No space left on device", "/out/x.png")
    assert output_failed(error) == 1
    assert capsys.readouterr().err == "error: /out/x.png: No space left on device\n"
    assert output_failed(BrokenPipeError(32, "Broken pipe")) == 1
    assert capsys.readouterr().err == ""
