"""JPEG decoding where simplejpeg has no wheel (Raspberry Pi OS 32-bit): the system libturbojpeg, just as strict.

The fallback is forced here by hiding simplejpeg; CI installs libturbojpeg0 (Debian's, as a Pi has it).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shared_data import real_images

import edge.imaging.decode as decode
from edge.imaging import synthetic, turbojpeg
from edge.imaging.decode import DecodeError, decode_bytes

ROOT = Path(__file__).resolve().parents[1]
needs_turbojpeg = pytest.mark.skipif(not turbojpeg.available(), reason="libturbojpeg0 is not installed here")


@pytest.fixture
def no_simplejpeg(monkeypatch):
    monkeypatch.setattr(decode, "_simplejpeg", None)


def _corrupt_scan(data: bytes, seed: int = 0) -> bytes:
    data = bytearray(data)
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    data[start:-2] = np.random.default_rng(seed).integers(0, 255, len(data) - start - 2, dtype=np.uint8).tobytes()
    return bytes(data)


@needs_turbojpeg
def test_fallback_gives_simplejpeg_s_pixels(monkeypatch):
    files = [p.read_bytes() for p in real_images(2)] or [synthetic.smear_jpeg(s) for s in range(4)]
    # Large frames are decoded smaller by libjpeg's scaled IDCT: both decoders must pick the same scale.
    files += [synthetic.smear_jpeg(5, size) for size in ((2000, 1500), (1296, 972), (4056, 3040), (900, 900))]
    strict = [decode_bytes(d, target=448) for d in files]
    monkeypatch.setattr(decode, "_simplejpeg", None)
    assert decode.jpeg_decoder() == "turbojpeg"
    for data, a in zip(files, strict):
        b = decode_bytes(data, target=448)
        assert b.reduced_by == a.reduced_by and np.array_equal(a.rgb, b.rgb)


@needs_turbojpeg
def test_fallback_refuses_corrupt_and_truncated_scan_data(no_simplejpeg):
    data = synthetic.smear_jpeg(3)
    with pytest.raises(DecodeError, match="truncated JPEG"):
        decode_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="corrupt JPEG data"):
        decode_bytes(_corrupt_scan(data))
    with pytest.raises(DecodeError, match="JPEG"):
        decode_bytes(data[:20] + bytes(200))
    assert decode_bytes(data + bytes(512)).rgb.shape == (224, 224, 3)  # padding after the end marker is fine


@needs_turbojpeg
def test_without_the_simplejpeg_package_at_all_a_fresh_process_uses_libturbojpeg(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(_corrupt_scan(synthetic.smear_jpeg(4), 1))
    code = (
        "import sys; sys.modules['simplejpeg'] = None\n"  # import simplejpeg -> ImportError
        "import edge.imaging.decode as d\n"
        "print(d.jpeg_decoder())\n"
        "try:\n d.decode_file(sys.argv[1])\nexcept d.DecodeError as e:\n print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "turbojpeg"
    assert "refused: corrupt JPEG data" in out.stdout


def test_with_no_strict_decoder_opencv_decodes_and_the_log_says_what_is_lost(no_simplejpeg, monkeypatch, caplog):
    monkeypatch.setattr(turbojpeg, "available", lambda: False)
    monkeypatch.setattr(decode, "_warned_lenient", False)
    data = synthetic.smear_jpeg(6)
    with caplog.at_level(logging.WARNING, logger="edge.imaging.decode"):
        assert decode.jpeg_decoder() == "opencv"
        assert decode_bytes(data).rgb.shape == (224, 224, 3)
        decode_bytes(data)
    assert sum("cannot refuse corrupt scan data" in r.message for r in caplog.records) == 1
    with pytest.raises(DecodeError, match="truncated"):
        decode_bytes(data[: len(data) // 2])  # the missing end marker is still caught
