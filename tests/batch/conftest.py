"""Images and a pipeline shared by the Dask pool and Zarr store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PIPELINE = (
    "layers:\n"
    "  - conv: {out_channels: 4, padding: 1, seed: 7}\n    bn: batch\n"
    "  - conv: {out_channels: 3, stride: 2, seed: 8}\n    bn: {mode: batch, weight: 2.0}\n"
    "    activation: none\n"
)


def save_image(path: Path, rng: np.random.Generator, size=(20, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def make_folder(root: Path, count: int, seed: int = 3, size=(20, 24)) -> list[Path]:
    """``count`` RGB PNGs in two subfolders, returned in sorted order."""
    rng = np.random.default_rng(seed)
    paths = [save_image(root / f"p{i % 2}" / f"im{i:02d}.png", rng, size) for i in range(count)]
    return sorted(paths)


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE)
    return config


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
