"""``cbr batch`` and ``cbr calibrate``: folders of images. Parse, call, print, exit code.

Exit codes: 0 all images done; 1 some image failed (the others are done); 2 bad
arguments or config (nothing written); 130 interrupted (Ctrl-C: finished images are
kept, the next run resumes).
"""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cbr_cli.cli import options as opt
from cbr_cli.cli.common import run, shown_path

if TYPE_CHECKING:
    from cbr_cli.batch.calibrate import CalibrateResult
    from cbr_cli.batch.options import BatchResult
    from cbr_cli.spec.flags import LayerFlags

FOLDER = "Folder"
OUTPUT = "Output"

InDir = Annotated[
    Path,
    typer.Argument(
        help="Folder of images (PNG, JPEG, TIFF, BMP, WebP, GIF); other files are skipped."
    ),
]
Recursive = Annotated[
    bool,
    typer.Option("--recursive", "-r", help="Include subfolders.", rich_help_panel=FOLDER),
]
Glob = Annotated[
    Optional[str],
    typer.Option(
        metavar="PATTERN",
        help="Only paths relative to IN_DIR that match this fnmatch pattern ('*' also "
        "matches '/'), e.g. '*.png' or 'cats/*'.",
        rich_help_panel=FOLDER,
    ),
]
Jobs = Annotated[
    Optional[str],
    typer.Option(
        "--jobs", "-j", metavar="INTEGER",
        help="Worker processes (default: CPUs available; at most 4 per CPU: more only add "
        "memory and contention).",
        rich_help_panel=FOLDER,
    ),
]  # fmt: skip
JOBS_EXPECTED = "a positive integer"
FailFast = Annotated[
    bool,
    typer.Option("--fail-fast", help="Stop at the first image that fails.", rich_help_panel=FOLDER),
]


def _interrupted(what: str) -> typer.Exit:
    sys.stderr.write(f"interrupted: {what}\n")
    return typer.Exit(130)


@opt.with_layer_flags
def batch(
    in_dir: InDir,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder; mirrors IN_DIR's tree."),
    ],
    config: opt.Config = None,
    recursive: Recursive = False,
    glob: Glob = None,
    jobs: Jobs = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Redo every image, even those an earlier run finished.",
            rich_help_panel=FOLDER,
        ),
    ] = False,
    fail_fast: FailFast = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove the output folders of images no longer in IN_DIR (only cbr's files).",
            rich_help_panel=FOLDER,
        ),
    ] = False,
    dask: Annotated[
        Optional[str],
        typer.Option(
            "--dask",
            metavar="ADDRESS",
            help="Run the images and the BN statistics pass on a Dask cluster: a scheduler "
            "tcp://HOST:PORT, or local[:N] (N worker processes here). IN_DIR and OUT must be "
            "on a filesystem every worker sees. Needs the dask extra.",
            rich_help_panel=FOLDER,
        ),
    ] = None,
    colormap: opt.Colormap = None,
    normalize: opt.Normalize = "auto",
    view_range: opt.ViewRange = "p99.5",
    save_npy: opt.SaveNpy = False,
    channel_pngs: opt.ChannelPngs = True,
    report: opt.BatchReport = True,
    resize: opt.Resize = None,
    pngs: opt.Pngs = True,
    dtype: opt.Dtype = "float32",
    store: Annotated[
        Optional[Path],
        typer.Option(
            "--store",
            metavar="PATH",
            help="Also write every image's feature maps into one Zarr (v3) store, an "
            "(N, C, H, W) array per <layer>/<stage>, one chunk per image (relative PATH: "
            "under OUT). Images must give one output size (--resize). Needs the zarr extra.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    *,
    flags: "LayerFlags",  # the layer flags, gathered by with_layer_flags
) -> None:
    """Run every image of a folder through the pipeline: resumable, parallel, fault-tolerant.

    Writes what `cbr apply` writes per image into OUT/<relative dir>/<name>/, plus
    stats.csv, aggregate.csv, failures.txt and manifest.json in OUT. A rerun skips
    finished images. A BN in mode batch normalises with statistics over the whole
    folder (PyTorch train mode with the folder as one batch), cached in OUT/bn_stats.json.
    --store PATH also writes every image's maps into one Zarr store; --no-pngs writes
    arrays and statistics only. Exit code 1 if any image failed, 130 if interrupted.
    """

    def body() -> "BatchResult":
        import shlex

        from rich.console import Console

        from cbr_cli.batch.options import BatchOptions
        from cbr_cli.batch.runner import run_batch
        from cbr_cli.cli.progress import ProgressDisplay
        from cbr_cli.spec.flags import build_spec

        spec = build_spec(config, flags)
        options = BatchOptions(
            out_dir=str(out),
            recursive=recursive,
            glob=glob,
            jobs=opt.parse_int(jobs, "--jobs", JOBS_EXPECTED),
            force=force,
            fail_fast=fail_fast,
            prune=prune,
            dask=dask,
            store=None if store is None else str(store),
            output=opt.output_options(
                out, colormap, normalize, save_npy, channel_pngs, resize,
                range_rule=view_range, report=report, pngs=pngs, dtype=dtype,
                store=store is not None,
                # Not the whole command line: the pages stay the same bytes whatever -j,
                # --dask, OUT's name or a resume; manifest.json holds the options.
                command=shlex.join(["cbr", "batch", str(in_dir)]),
            ),
        )  # fmt: skip
        with ProgressDisplay(Console(stderr=True, emoji=False)) as display:
            return run_batch(in_dir, spec, options, on_progress=display)

    try:
        result = run(body)
    except KeyboardInterrupt:
        raise _interrupted(
            f"finished images are kept in {out}; run the same command again to resume"
        ) from None
    for warning in result.warnings:  # after the progress display is gone
        sys.stderr.write(f"warning: {warning}\n")
    _print_batch(result, in_dir, out)
    raise typer.Exit(1 if result.failures else 0)


def _print_orphans(result: "BatchResult") -> None:
    """One line on stderr about output folders of images gone from IN."""
    if not result.orphans:
        return
    shown = ", ".join(result.orphans[:5]) + (", ..." if len(result.orphans) > 5 else "")
    count = len(result.orphans)
    if result.pruned:
        sys.stderr.write(f"removed {count} folder(s) of images no longer in IN: {shown}\n")
    else:
        sys.stderr.write(
            f"note: {count} folder(s) in OUT belong to images no longer in IN ({shown}); "
            "--prune removes them\n"
        )


def _given_paths(reason: str, in_dir: Path) -> str:
    """``reason`` with the images' absolute paths (workers get them so) as the user gave
    IN_DIR: relative when it was relative, as ``cbr apply`` names its images."""
    import os
    import re

    if in_dir.is_absolute():
        return reason
    root = re.escape(os.path.abspath(in_dir) + os.sep)
    return re.sub(f"'({root}[^']*)'", lambda m: repr(os.path.relpath(m.group(1))), reason)


def _print_batch(result: "BatchResult", in_dir: Path, out: Path) -> None:
    from rich.console import Console

    _print_orphans(result)
    from cbr_cli.cli.batch_tables import failures_table, summary_table

    console = Console(emoji=False)
    counts = {k: result.count(k) for k in ("processed", "skipped", "failed", "not run")}
    if not counts["not run"]:
        del counts["not run"]
    console.print(summary_table(counts))
    if result.failures:
        failures = [(name, _given_paths(reason, in_dir)) for name, reason in result.failures]
        console.print(failures_table(failures, shown_path(result.files["failures"], out)))
    if result.stopped:
        console.print("stopped at the first failure (--fail-fast)", style="yellow")
    console.print(f"wrote {shown_path(result.out_dir, out)}", highlight=False, soft_wrap=True)
    if result.store is not None:
        console.print(f"store {result.store}", highlight=False, soft_wrap=True)


def calibrate(
    in_dir: InDir,
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Pipeline YAML with BN layers in mode: batch."),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Calibrated pipeline YAML to write."),
    ],
    momentum: Annotated[
        Optional[str],
        typer.Option(
            metavar="FLOAT",
            help="Instead of the exact dataset average: PyTorch's exponential update with "
            "this momentum in [0, 1], one train-mode step per image in sorted order (a "
            "DataLoader with batch size 1), starting from mean 0 / variance 1. This "
            "flag alone chooses the update; the config's bn.momentum is not used.",
        ),
    ] = None,
    recursive: Recursive = False,
    glob: Glob = None,
    jobs: Jobs = None,
    fail_fast: FailFast = False,
    color: opt.Color = None,
    resize: opt.Resize = None,
) -> None:
    """Compute dataset-wide BatchNorm statistics; write the pipeline in BN mode running.

    Every BN in mode batch becomes mode running with running_mean = the mean and
    running_var = the unbiased variance over every output position of every image (as
    PyTorch stores them). `cbr apply`/`cbr batch` with the written file then
    normalise each image as batch mode over the whole folder would (PyTorch's eval
    mode after train mode), in one pass. Exit code 1 if an image failed (it is left
    out of the statistics).
    """

    def body() -> "CalibrateResult":
        from rich.console import Console

        from cbr_cli.batch.calibrate import CalibrateOptions, run_calibrate
        from cbr_cli.cli.progress import ProgressDisplay
        from cbr_cli.spec.flags import LayerFlags, build_spec

        spec = build_spec(config, LayerFlags(color=color))
        options = CalibrateOptions(
            out=str(out),
            recursive=recursive,
            glob=glob,
            jobs=opt.parse_int(jobs, "--jobs", JOBS_EXPECTED),
            fail_fast=fail_fast,
            resize=opt.parse_size(resize),
            momentum=opt.parse_float(momentum, "--momentum", "a number in [0, 1]"),
        )
        with ProgressDisplay(Console(stderr=True, emoji=False)) as display:
            return run_calibrate(in_dir, spec, options, on_progress=display)

    try:
        result = run(body)
    except KeyboardInterrupt:
        raise _interrupted("nothing written") from None
    _print_calibrate(result, in_dir, out)
    raise typer.Exit(1 if result.failures else 0)


def _print_calibrate(result: "CalibrateResult", in_dir: Path, out: Path) -> None:
    from rich.console import Console

    from cbr_cli.cli.batch_tables import bn_stats_table, failures_table

    console = Console(emoji=False)
    if result.running:
        console.print(bn_stats_table(result.running))
    if result.failures:
        failures = [(name, _given_paths(reason, in_dir)) for name, reason in result.failures]
        console.print(failures_table(failures))
    if result.stopped:
        console.print("stopped at the first failure (--fail-fast); nothing written", style="yellow")
    else:
        console.print(f"wrote {shown_path(result.out, out)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``batch`` and ``calibrate`` to the ``cbr`` app."""
    app.command()(batch)
    app.command()(calibrate)
