"""The script a user would write instead of ``cbr batch``: plain torch + Pillow, 2 processes.

Per image: Pillow decode -> float32 in [0, 1] -> torch ``conv2d`` -> ``batch_norm`` in eval
mode (running statistics) -> ReLU; then for each stage (conv, bn, act) ``np.save`` of the
(C, H, W) float32 array and, unless ``--no-pngs``, a grid PNG of all channels plus one PNG per
channel: 8-bit greyscale, min-max scaled over the whole stage, Pillow's default compression.
The weights are the ``.npy`` files the benchmark's YAML config names, so both runs compute the
same maps. Used by ``benchmarks/bench_batch.py``; runnable on its own::

    python benchmarks/batch_reference.py IN_DIR OUT_DIR PARAMS_DIR [--no-pngs] [-j 2]

Written as such a script usually is: torch imported at the top, a ``multiprocessing.Pool``
(the platform's default start method), torch held at one thread per process so the
processes do not oversubscribe the cores (the careful choice, and the faster one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PARAMS: dict[str, torch.Tensor] = {}


def init(params_dir: str) -> None:
    torch.set_num_threads(1)
    for name in ("weight", "bias", "running_mean", "running_var", "bn_weight", "bn_bias"):
        PARAMS[name] = torch.from_numpy(np.load(Path(params_dir) / f"{name}.npy"))


def to_uint8(stage: np.ndarray) -> np.ndarray:
    low, high = float(stage.min()), float(stage.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.rint((stage - low) * scale).astype(np.uint8)


def grid(channels: np.ndarray, gap: int = 2) -> np.ndarray:
    count, height, width = channels.shape
    cols = int(np.ceil(np.sqrt(count)))
    rows = -(-count // cols)
    out = np.zeros((rows * (height + gap) - gap, cols * (width + gap) - gap), np.uint8)
    for c in range(count):
        top, left = (c // cols) * (height + gap), (c % cols) * (width + gap)
        out[top : top + height, left : left + width] = channels[c]
    return out


def process(job: tuple[str, str, bool]) -> None:
    path, out_dir, pngs = job
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()
    with torch.no_grad():
        conv = F.conv2d(x, PARAMS["weight"], PARAMS["bias"], padding=1)
        bn = F.batch_norm(
            conv,
            PARAMS["running_mean"],
            PARAMS["running_var"],
            PARAMS["bn_weight"],
            PARAMS["bn_bias"],
            training=False,
            eps=1e-5,
        )
        act = F.relu(bn)
    folder = Path(out_dir) / Path(path).stem
    folder.mkdir(parents=True, exist_ok=True)
    for stage, tensor in (("conv", conv), ("bn", bn), ("act", act)):
        array = tensor[0].numpy()
        np.save(folder / f"{stage}.npy", array)
        if pngs:
            pixels = to_uint8(array)
            Image.fromarray(grid(pixels)).save(folder / f"{stage}_grid.png")
            for c in range(len(pixels)):
                Image.fromarray(pixels[c]).save(folder / f"{stage}_c{c:02d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("in_dir")
    parser.add_argument("out_dir")
    parser.add_argument("params_dir")
    parser.add_argument("--no-pngs", action="store_true")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    paths = sorted(str(p) for p in Path(args.in_dir).iterdir() if p.suffix == ".png")
    jobs = [(p, args.out_dir, not args.no_pngs) for p in paths]
    os.makedirs(args.out_dir, exist_ok=True)
    with multiprocessing.Pool(args.jobs, initializer=init, initargs=(args.params_dir,)) as pool:
        pool.map(process, jobs, chunksize=1)


if __name__ == "__main__":
    main()
