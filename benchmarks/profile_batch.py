"""Where does ``cbr batch``'s time go? Per phase, for bench_batch's folder and block.

Usage::

    python benchmarks/profile_batch.py [--images 48] [--size 288] [--jobs 2] [--profile 25]
        [--no-pngs]

Writes the same crops and 16-channel eval-mode block as ``benchmarks/bench_batch.py``, then
measures, each in a fresh interpreter:

* **interpreter** -- ``python -c pass``; **cli imports** -- ``import cbr_cli.cli`` plus the
  modules ``cbr batch`` imports before its pool starts (``cbr_cli.batch.runner``);
* **whole command** -- ``cbr batch -j JOBS`` wall time;
* **per image in one worker** -- what a worker does per image (``_process_task``:
  ``process_image`` + the done-marker), one thread as each of 2 workers on 2 cores gets,
  over every image in order; the first image apart (it pays the worker's lazy imports:
  Pillow's PNG plugin, the render package, the font); phases from ``process_image``'s
  timings: load, compute, stats, render (colouring, tiles, montage, labels; minus
  encode), encode (PNG filter + deflate, ``.npy``, file writes), marker.

``ideal`` is ``interpreter + cli imports + sum(per image) / jobs``; what is left of the
whole command is the parent's own work (discovery, header scan, reports) and the pool.
With ``--profile N`` the per-image loop also runs under cProfile (a second pass) and the
N functions with the most own time are listed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_batch's crops and block

from bytecode_cache import cache_bytecode

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("load", "compute", "stats", "render", "encode", "marker")


def wall(argv: list[str], repeat: int = 3) -> float:
    """Median wall time of ``argv`` run ``repeat`` times (after one warm-up)."""
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def pngs_off(no_pngs: bool) -> dict[str, bool]:
    """The ApplyOptions field ``--no-pngs`` sets, if this checkout has one (issue 12)."""
    import dataclasses

    from cbr_cli.run.records import ApplyOptions

    if not no_pngs:
        return {}
    names = {f.name for f in dataclasses.fields(ApplyOptions)}
    for name, value in (("pngs", False), ("write_pngs", False), ("no_pngs", True)):
        if name in names:
            return {name: value}
    raise SystemExit("--no-pngs: this checkout's ApplyOptions has no such option yet")


def worker_pass(crops: str, params: str, out: str, no_pngs: bool, profile: int) -> None:
    """In a fresh process: what one batch worker does per image; JSON on stdout."""
    from cbr_cli.batch.discover import discover, plan_outputs
    from cbr_cli.batch.resume import write_marker
    from cbr_cli.batch.scan import RunSetup
    from cbr_cli.core.threads import set_threads
    from cbr_cli.io.image_folder import ImageFolder, OutTree
    from cbr_cli.run.apply import process_image
    from cbr_cli.run.records import ApplyOptions
    from cbr_cli.spec.flags import LayerFlags, build_spec

    set_threads(1)
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(limits=1)
    try:  # what a worker's init does too (cbr_cli.batch.pool._init_worker)
        from cbr_cli.run.allocator import keep_freed_memory

        keep_freed_memory()
    except ImportError:  # an earlier checkout
        pass
    spec = build_spec(Path(params) / "block.yaml", LayerFlags())
    setup = RunSetup(spec, "rgb", ApplyOptions(save_npy=True, **pngs_off(no_pngs)))

    def one_pass(root: str) -> list[dict[str, float]]:
        tree = OutTree(root)
        tree.create_root()
        jobs = plan_outputs(crops, discover(crops, False, None), root)
        rows = []
        for job in jobs:
            timings: dict[str, float] = {}
            start = time.perf_counter()
            folder = ImageFolder(tree, job.out_rel)
            record = process_image(
                job.path, job.name, job.folder, spec, setup.options, color=setup.color,
                layers=setup.layers, timings=timings, folder=folder,
            )  # fmt: skip
            mark = time.perf_counter()
            opts = setup.options
            write_marker(
                job.folder, "x", record.to_dict(), channel_pngs=opts.channel_pngs,
                save_npy=opts.save_npy, pngs=opts.pngs, report=opts.report,
            )  # fmt: skip
            folder.drop_pending()
            end = time.perf_counter()
            timings["render"] -= timings.get("encode", 0.0)  # writes run inline here
            timings["marker"] = end - mark
            timings["total"] = end - start
            rows.append(timings)
        return rows

    rows = one_pass(out + "/a")
    table = ""
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        one_pass(out + "/b")
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumtime").print_stats("cbr_cli", profile)
        table = stream.getvalue()
    del limits
    print(json.dumps({"rows": rows, "profile": table}))


def traced_run(crops: str, params: str, out: str, jobs: int, no_pngs: bool, log: str) -> None:
    """In a fresh process: a real ``run_batch`` with its phases timed; JSON lines in ``log``.

    Parent: imports, setup (discovery, header scan), pool start (fork + worker init), the
    images (wall), the reports. Workers (forked, so the patches below are theirs too):
    per image ``process_image``'s timings with PNG and ``.npy`` writes apart, the marker.
    """
    t0 = time.perf_counter()
    import cbr_cli.cli.app  # noqa: F401  (what `cbr` imports before it parses)
    from cbr_cli.batch import pool, runner
    from cbr_cli.batch.options import BatchOptions
    from cbr_cli.io import writers
    from cbr_cli.run.records import ApplyOptions
    from cbr_cli.spec.flags import LayerFlags, build_spec

    parent: dict[str, float] = {"imports": time.perf_counter() - t0}

    def log_line(record: dict) -> None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def timed_parent(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parent[name] = parent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    writes: dict[str, float] = {}

    def timed_write(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                writes[name] = writes.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    writers.write_png = timed_write("png", writers.write_png)
    writers.write_npy = timed_write("npy", writers.write_npy)
    real_process, real_marker, real_init = (
        runner.process_image, runner.write_marker, pool._init_worker,
    )  # fmt: skip

    def process_image(*args, **kwargs):  # type: ignore[no-untyped-def]
        writes.clear()
        timings: dict[str, float] = {}
        start = time.perf_counter()
        record = real_process(*args, timings=timings, **kwargs)
        timings["total"] = time.perf_counter() - start
        timings["render"] -= timings.get("encode", 0.0)  # writes run inline in workers
        timings.update(writes)
        timings["encode"] -= sum(writes.values())  # what is left: temp files, renames
        log_line({"pid": os.getpid(), **timings})
        return record

    def write_marker(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        real_marker(*args, **kwargs)
        log_line({"pid": os.getpid(), "marker": time.perf_counter() - start})

    def init_worker(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        real_init(*args, **kwargs)
        log_line({"pid": os.getpid(), "init": time.perf_counter() - start})

    runner.process_image, runner.write_marker, pool._init_worker = (
        process_image, write_marker, init_worker,
    )  # fmt: skip
    runner._Run.__init__ = timed_parent("setup", runner._Run.__init__)  # type: ignore[method-assign]
    pool.WorkerPool.start = timed_parent("pool start", pool.WorkerPool.start)  # type: ignore[method-assign]
    runner._Run.process = timed_parent("images", runner._Run.process)  # type: ignore[method-assign]
    import cbr_cli.batch.reports as reports

    reports.write_reports = timed_parent("reports", reports.write_reports)  # type: ignore[assignment]
    start = time.perf_counter()
    spec = build_spec(Path(params) / "block.yaml", LayerFlags())
    output = ApplyOptions(out_dir=out, save_npy=True, **pngs_off(no_pngs))
    options = BatchOptions(out, jobs=jobs, output=output)
    parent["spec"] = time.perf_counter() - start
    start = time.perf_counter()
    runner.run_batch(crops, spec, options)
    parent["run_batch"] = time.perf_counter() - start
    parent["images"] -= parent.get("pool start", 0.0)  # process() starts the pool
    log_line({"parent": parent})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--no-pngs", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--traced", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_pass(*args.worker, no_pngs=args.no_pngs, profile=args.profile)
        return 0
    if args.traced:
        crops, params, out, log = args.traced
        traced_run(crops, params, out, args.jobs, args.no_pngs, log)
        return 0
    from bench_batch import write_crops, write_params  # not in --traced: imports are timed

    py = sys.executable
    flag = ["--no-pngs"] if args.no_pngs else []
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_bytecode(tmp)  # as a user's install runs: bytecode/.pyc cached
        work = Path(tmp)
        write_crops(work / "crops", args.images, args.size)
        (work / "params").mkdir()
        write_params(work / "params")
        crops, params = str(work / "crops"), str(work / "params")
        for i in range(args.rounds + 1):  # the first is a warm-up (page cache, .pyc)
            log = work / f"log{i}.jsonl"
            out = work / f"out{i}"
            argv = [py, __file__, "--traced", crops, params, str(out), str(log)]
            argv += ["--jobs", str(args.jobs), *flag]
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            elapsed = time.perf_counter() - start
            shutil.rmtree(out)
            if i:
                lines = [json.loads(line) for line in log.read_text().splitlines()]
                rounds.append({"wall": elapsed, "lines": lines})
        table = ""
        if args.profile:
            argv = [py, __file__, "--worker", crops, params, str(work / "w")]
            argv += ["--profile", str(args.profile), *flag]
            os.makedirs(work / "w")
            table = json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)[
                "profile"
            ]
    report(rounds, args)
    if table:
        print(table)
    return 0


def report(rounds: list[dict], args: argparse.Namespace) -> None:
    median = statistics.median
    walls = [r["wall"] for r in rounds]
    parents = [next(line["parent"] for line in r["lines"] if "parent" in line) for r in rounds]
    images = [[line for line in r["lines"] if "total" in line] for r in rounds]
    n = len(images[0])
    print(
        f"cbr batch, {n} RGB crops of {args.size}², 16-channel block (eval BN), --save-npy"
        f"{' --no-pngs' if args.no_pngs else ''}, -j {args.jobs}; median of {len(rounds)} runs"
    )
    print(f"  whole process       {median(walls):7.3f} s  ({n / median(walls):.2f} images/s)")
    inner = median(p["run_batch"] for p in parents)
    print("  parent (wall):")
    for name in ("imports", "spec", "setup", "pool start", "images", "reports"):
        value = median(p.get(name, 0.0) for p in parents)
        print(f"    {name:<16} {value:7.3f} s")
    rest = median(
        w - p["imports"] - p["spec"] - p["run_batch"] for w, p in zip(walls, parents, strict=True)
    )
    print(f"    interpreter+exit {rest:7.3f} s  (whole process - the above)")
    other = inner - median(
        p.get("setup", 0) + p.get("pool start", 0) + p["images"] + p.get("reports", 0)
        for p in parents
    )
    print(f"    rest of run_batch {other:6.3f} s  (lock, orphans, ...)")
    inits = [line["init"] for r in rounds for line in r["lines"] if "init" in line]
    print(f"  worker init (threadpoolctl limits etc.): median {median(inits) * 1e3:.1f} ms")
    phases = ("load", "compute", "stats", "render", "png", "npy", "encode", "marker")
    markers = [[line["marker"] for line in r["lines"] if "marker" in line] for r in rounds]
    per_image = {p: median(median(i.get(p, 0.0) for i in imgs) for imgs in images) for p in phases}
    per_image["marker"] = median(median(m) for m in markers)
    per_image["total"] = median(median(i["total"] for i in imgs) for imgs in images)
    per_image["total"] += per_image["marker"]
    busy = median(
        sum(i["total"] for i in imgs) + sum(m) for imgs, m in zip(images, markers, strict=True)
    )
    print(f"  per image in a worker (ms, median; workers run {args.jobs} at a time):")
    labels = {"encode": "files", "png": "png", "npy": "npy"}
    for phase in (*phases, "total"):
        value = per_image[phase]
        share = 100 * value / per_image["total"]
        print(f"    {labels.get(phase, phase):<8} {value * 1e3:7.1f}  {share:5.1f}%")
    print(
        f"  worker busy time, summed: {busy:.2f} s; / {args.jobs} = {busy / args.jobs:.2f} s"
        f" of the {median(p['images'] for p in parents):.2f} s images phase"
    )
    print(
        "  render: colouring, tiles, montage, labels; png/npy: write_png/write_npy (filter,"
        "\n  deflate, temp file, rename); files: the rest of the writing (folder prepare);"
        "\n  marker: the done-marker (fsync-ed)."
    )


if __name__ == "__main__":
    sys.exit(main())
