"""Atomic writes and the id-PNG round trip."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.runtime.errors import InputError
from wsss.runtime.io import (
    OUTPUT_MARKER,
    _host,
    atomic_dir,
    atomic_path,
    read_label_png,
    read_rgb,
    voc_palette,
    write_jpeg,
    write_label_png,
)


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
    with atomic_dir(target) as tmp:
        (tmp / "old").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "new"]
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "partial").write_text("z")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_16bit_grey_png_scaled_not_white(tmp_path: Path) -> None:
    """Pillow opens a 16-bit grey PNG as mode I;16, whose convert('RGB') clips every value above 255 to white."""
    values = np.array([[0, 257, 32896], [65535, 1000, 65278]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I;16")
    rgb = read_rgb(tmp_path / "g16.png")
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    expected = np.array([[0, 1, 128], [255, 4, 254]], dtype=np.uint8)  # round(v * 255 / 65535)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], expected)


def test_float_image_rejected_in_one_line(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(InputError) as err:
        read_rgb(tmp_path / "f.tif")
    assert str(err.value).startswith(str(tmp_path / "f.tif")) and "mode F" in str(err.value)


def test_decompression_bomb_is_one_line_error(tmp_path: Path, monkeypatch) -> None:
    write_jpeg(tmp_path / "big.jpg", np.zeros((40, 50, 3), dtype=np.uint8))
    write_label_png(tmp_path / "big.png", np.zeros((40, 50), dtype=np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 2000 pixels > 2 × 500: Pillow raises its bomb error
    for path, reader in ((tmp_path / "big.jpg", read_rgb), (tmp_path / "big.png", read_label_png)):
        with pytest.raises(InputError) as err:
            reader(path)
        assert str(err.value).startswith(str(path)) and "decompression bomb" in str(err.value)


def test_max_pixels_refuses_before_decoding(tmp_path: Path, monkeypatch) -> None:
    write_jpeg(tmp_path / "x.jpg", np.zeros((40, 50, 3), dtype=np.uint8))
    assert read_rgb(tmp_path / "x.jpg", max_pixels=2000).shape == (40, 50, 3)

    def no_decoding(self):
        raise AssertionError("decoded an image above max_pixels")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(InputError) as err:
        read_rgb(tmp_path / "x.jpg", max_pixels=1999, limit_key="datasets.mine.max_pixels")
    assert str(err.value) == (
        f"{tmp_path / 'x.jpg'}: image is 50×40 = 2000 pixels, above max_pixels 1999; "
        "downscale the image or raise datasets.mine.max_pixels"
    )


def test_exif_orientation_warned_once_and_not_applied(tmp_path: Path, caplog) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    with caplog.at_level(logging.WARNING, logger="wsss.runtime.io"):
        first = read_rgb(tmp_path / "rot.png")
        read_rgb(tmp_path / "rot.png")
        read_rgb(tmp_path / "plain.png")
    np.testing.assert_array_equal(first, rgb)  # stored pixel order: not rotated
    warnings = [r for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(warnings) == 1 and "rot.png" in warnings[0].getMessage()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_processes_swept(tmp_path: Path) -> None:
    """What SIGKILL leaves (a temp file or folder named with a dead pid) is removed when an output is next written
    beside it; a live process's temp, another host's, and files that merely look alike are kept."""
    host, dead = _host(), _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_file = tmp_path / f".out.txt.{host}-{dead}-abcd1234.tmp.txt"
        stale_dir = tmp_path / f".d.{host}-{dead}-abcd1234.tmp"
        other_output = tmp_path / f".other.png.{host}-{dead}-x_y01234.tmp.png"
        kept = [
            tmp_path / f".out.txt.{host}-{live.pid}-abcd1234.tmp.txt",
            tmp_path / f".out.txt.otherhost-{dead}-abcd1234.tmp.txt",
            tmp_path / f"out.txt.{host}-{dead}-abcd1234.tmp",  # not hidden: not ours
            tmp_path / f".out.txt.{host}-{dead}-abcd.tmp",
        ]  # not a mkstemp name
        for path in [stale_file, other_output, *kept]:
            path.write_text("partial")
        stale_dir.mkdir()
        (stale_dir / "half").write_text("partial")
        with atomic_path(tmp_path / "out.txt") as tmp:
            assert tmp.name.startswith(f".out.txt.{host}-{os.getpid()}-")
            tmp.write_text("complete")
        with atomic_dir(tmp_path / "d") as tmp:
            assert tmp.name.startswith(f".d.{host}-{os.getpid()}-")
        assert not stale_file.exists() and not stale_dir.exists() and not other_output.exists()
        assert all(path.exists() for path in kept)
        assert (tmp_path / "out.txt").read_text() == "complete"
    finally:
        live.kill()
        live.wait()


UMASK_SCRIPT = """
import os, stat, sys
from pathlib import Path
import numpy as np
os.umask(int(sys.argv[2], 8))
from wsss.runtime.io import atomic_dir, write_label_png, write_text
out = Path(sys.argv[1])
write_text(out / "classes.txt", "background\\n")
write_label_png(out / "mask.png", np.zeros((2, 2), np.uint8))
with atomic_dir(out / "folder") as tmp:
    write_text(tmp / "ids.txt", "a\\n")
for p in ("classes.txt", "mask.png", "folder", "folder/ids.txt"):
    print(p, oct(stat.S_IMODE((out / p).stat().st_mode)))
"""


@pytest.mark.parametrize("umask, file_mode, dir_mode", [("022", "0o644", "0o755"), ("002", "0o664", "0o775")])
def test_atomic_outputs_follow_the_umask(tmp_path: Path, umask: str, file_mode: str, dir_mode: str) -> None:
    """Outputs get the mode a direct write would give (issue 18: they kept mkstemp's 0600 / mkdtemp's 0700, so
    nobody else in a group could read results). Planted bug: drop _as_if_created. Runs in a subprocess so this
    process's umask is untouched."""
    proc = subprocess.run(
        [sys.executable, "-c", UMASK_SCRIPT, str(tmp_path / "out"), umask],
        capture_output=True,
        check=False,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    modes = dict(line.split() for line in proc.stdout.splitlines())
    assert modes == {"classes.txt": file_mode, "mask.png": file_mode, "folder": dir_mode, "folder/ids.txt": file_mode}
