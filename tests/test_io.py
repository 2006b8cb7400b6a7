"""Atomic writes and the id-PNG round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.io import atomic_dir, atomic_path, read_label_png, voc_palette, write_label_png


def test_label_png_roundtrip_and_palette(tmp_path: Path) -> None:
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_label_png(tmp_path / "m.png", ids)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
        # VOC colours: 1 = (128, 0, 0), 2 = (0, 128, 0), 15 = person (192, 128, 128), 255 = (224, 224, 192)
        pal = img.getpalette()
    assert pal[3:9] == [128, 0, 0, 0, 128, 0]
    assert pal[45:48] == [192, 128, 128] and pal[765:768] == [224, 224, 192]
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png"), ids)
    assert voc_palette()[:3] == [0, 0, 0]


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("complete")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "old").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "partial").write_text("z")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
