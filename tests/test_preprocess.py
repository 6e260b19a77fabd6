import struct
import zlib

import cv2
import numpy as np
import pytest

from edge.imaging import synthetic
from edge.imaging.decode import DecodeError, decode_bytes
from edge.imaging.preprocess import PreprocessParams, UnknownPreprocessing, preprocess
from edge.imaging.segmentation import scale_bar_slice
from tests.shared_data import HAVE_DATASET, NO_DATASET, real_images

P = PreprocessParams()


def _inputs():
    imgs = [(f"synthetic-{s}", synthetic.smear_jpeg(s)) for s in range(3)]
    imgs += [(p.name, p.read_bytes()) for p in real_images(2)]
    return imgs


@pytest.mark.parametrize("mode", ["raw", "segmented"])
def test_same_bytes_in_same_bytes_out(mode):
    params = P.with_mode(mode)
    for name, data in _inputs():
        a = preprocess(decode_bytes(data).rgb, params)
        b = preprocess(decode_bytes(bytes(data)).rgb, params)
        assert a.model_input.shape == (224, 224, 3) and a.model_input.dtype == np.uint8, name
        assert np.array_equal(a.model_input, b.model_input), name
        assert a.stats == b.stats, name


def test_segmentation_finds_the_stained_cells_of_a_synthetic_smear():
    rgb = synthetic.smear(seed=7, n_wbc=3)
    out = preprocess(rgb, P)
    lab = cv2.cvtColor(out.resized, cv2.COLOR_RGB2LAB)
    purple = lab[:, :, 1] > 160  # the nuclei drawn by the generator are strongly magenta
    assert purple.sum() > 200
    # Nearly every nucleus pixel is kept; red cells and background mostly are not.
    assert out.mask[purple].mean() > 0.95
    assert 0.01 < out.stats.cell_fraction < 0.35
    assert 1 <= out.stats.n_components <= 6
    background = np.all(out.model_input == np.array(P.background, np.uint8), axis=2)
    assert np.array_equal(background, ~out.mask)


def test_empty_field_has_no_cells():
    for kind in ("white", "uniform", "gray-noise"):
        out = preprocess(synthetic.bad_image(kind), P)
        assert out.stats.cell_fraction == 0.0, kind
        assert out.stats.n_components == 0, kind


@pytest.mark.skipif(not HAVE_DATASET, reason=NO_DATASET)
def test_real_images_have_cells_and_lose_their_scale_bar():
    ys, xs = scale_bar_slice(P)
    for path in real_images(3):
        rgb = decode_bytes(path.read_bytes()).rgb
        out = preprocess(rgb, P)
        assert out.stats.cell_fraction > 0.01, path.name
        assert out.stats.n_components >= 1, path.name
        corner = out.resized[ys, xs].reshape(-1, 3)
        assert (corner == corner[0]).all(), f"{path.name}: scale-bar box not painted over"
        assert not out.mask[ys, xs].any()


def test_large_jpeg_uses_reduced_decode_and_matches_full_decode():
    big = synthetic.smear(seed=3, size=(4000, 3000))
    data = synthetic.encode(big, "jpeg", 90)
    d = decode_bytes(data)
    assert (d.width, d.height) == (4000, 3000)
    assert d.reduced_by == 8  # 3000/8 = 375 still >= 224
    full = preprocess(big, P).resized.astype(int)
    reduced = preprocess(d.rgb, P).resized.astype(int)
    assert np.abs(full - reduced).mean() < 4.0


def _png_chunk(tag, body):
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def test_decompression_bomb_is_refused_from_the_header():
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    with pytest.raises(DecodeError, match="too large"):
        decode_bytes(data)


def _tiff_header(w: int, h: int, typ: int = 4, order: str = "<") -> bytes:
    """A TIFF with one IFD (width, length, 8-bit RGB, one strip) whose pixels are not there."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = [
        (256, typ, 1, w),
        (257, typ, 1, h),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 200),
        (277, 3, 1, 3),
        (279, 4, 1, w * h * 3),
    ]
    ifd = struct.pack(order + "H", len(entries))
    for tag, t, cnt, val in entries:
        value = struct.pack(order + "HH", val, 0) if t == 3 else struct.pack(order + "I", val)
        ifd += struct.pack(order + "HHI", tag, t, cnt) + value
    return magic + struct.pack(order + "I", 8) + ifd + struct.pack(order + "I", 0) + bytes(100)


@pytest.mark.parametrize("order,typ", [("<", 4), (">", 4), ("<", 3)])
def test_a_tiff_declaring_a_huge_raster_is_refused_from_its_header(order, typ):
    from edge.imaging.decode import image_size

    assert image_size(_tiff_header(640, 480, typ, order), "tiff") == (640, 480)
    with pytest.raises(DecodeError, match="20000x20000"):
        decode_bytes(_tiff_header(20000, 20000, 4, order))


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"hello, this is text\n", "not a supported image"),
        (b"GIF89a" + b"\x00" * 100, "not a supported image"),
    ],
)
def test_non_images_are_rejected_with_a_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data)


def test_truncated_jpeg_is_rejected():
    data = synthetic.smear_jpeg(1)
    with pytest.raises(DecodeError, match="truncated|cannot decode"):
        decode_bytes(data[: len(data) // 2])


def test_grayscale_alpha_16bit_tiff_bmp_become_rgb():
    rgb = synthetic.smear(2)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    cases = {
        "gray-png": cv2.imencode(".png", gray)[1].tobytes(),
        "rgba-png": cv2.imencode(".png", bgra)[1].tobytes(),
        "16bit-png": cv2.imencode(".png", bgr.astype(np.uint16) * 257)[1].tobytes(),
        "tiff": cv2.imencode(".tiff", bgr)[1].tobytes(),
        "bmp": cv2.imencode(".bmp", bgr)[1].tobytes(),
    }
    for name, data in cases.items():
        d = decode_bytes(data)
        assert d.rgb.shape == (224, 224, 3) and d.rgb.dtype == np.uint8, name
        if name in ("rgba-png", "16bit-png", "tiff", "bmp"):
            assert np.abs(d.rgb.astype(int) - rgb.astype(int)).max() <= 1, name


def test_cmyk_jpeg_is_converted():
    PIL = pytest.importorskip("PIL.Image", reason="pillow (test extra) writes the CMYK JPEG")
    import io

    rgb = synthetic.smear(4)
    buf = io.BytesIO()
    PIL.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    d = decode_bytes(buf.getvalue())
    assert d.rgb.shape == (224, 224, 3)
    assert np.abs(d.rgb.astype(int) - rgb.astype(int)).mean() < 12


def test_params_round_trip_and_unknown_ones_are_refused():
    p = PreprocessParams(input_mode="raw", kmeans_k=4)
    assert PreprocessParams.from_dict(p.to_dict()) == p
    with pytest.raises(UnknownPreprocessing, match="warp_factor"):
        PreprocessParams.from_dict({**p.to_dict(), "warp_factor": 2})
    with pytest.raises(UnknownPreprocessing, match="lab-kmeans-9"):
        PreprocessParams.from_dict({**p.to_dict(), "version": "lab-kmeans-9"})
    with pytest.raises(UnknownPreprocessing, match="input_mode"):
        PreprocessParams(input_mode="hsv")


def _with_label(rgb, style):
    """Draw a scale-bar label in one of the two styles seen in the dataset."""
    out = rgb.copy()
    h, w = out.shape[:2]
    if style == "black-on-white":
        cv2.rectangle(out, (w - 31, h - 31), (w - 1, h - 1), (255, 255, 255), -1)
        cv2.putText(out, "200", (w - 29, h - 14), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1)
        cv2.line(out, (w - 30, h - 6), (w - 2, h - 6), (0, 0, 0), 2)
    else:
        cv2.putText(out, "200", (w - 28, h - 8), cv2.FONT_HERSHEY_PLAIN, 0.6, (255, 0, 0), 1)
    return out


@pytest.mark.parametrize("mode", ["raw", "segmented"])
def test_label_style_cannot_reach_the_model(mode):
    params = P.with_mode(mode)
    sources = [synthetic.smear(9)] + [decode_bytes(p.read_bytes()).rgb for p in real_images(1)]
    for rgb in sources:
        a = preprocess(_with_label(rgb, "black-on-white"), params)
        b = preprocess(_with_label(rgb, "red"), params)
        assert np.array_equal(a.model_input, b.model_input)
        assert a.stats == b.stats


def test_balanced_mode_removes_a_slide_tint():
    params = P.with_mode("balanced")
    sources = [synthetic.smear(11)] + [decode_bytes(p.read_bytes()).rgb for p in real_images(1)]
    for rgb in sources:
        tinted = np.clip(rgb.astype(np.float32) * np.array([1.0, 0.96, 0.85]), 0, 255).astype(np.uint8)
        raw_gap = np.abs(
            preprocess(rgb, P.with_mode("raw")).model_input.astype(int)
            - preprocess(tinted, P.with_mode("raw")).model_input.astype(int)
        ).mean()
        bal_gap = np.abs(
            preprocess(rgb, params).model_input.astype(int) - preprocess(tinted, params).model_input.astype(int)
        ).mean()
        assert raw_gap > 8
        assert bal_gap < raw_gap / 4


def test_bytes_after_the_jpeg_end_marker_are_not_truncation():
    data = synthetic.smear_jpeg(2)
    d = decode_bytes(data + bytes(1024))
    assert d.rgb.shape == (224, 224, 3)
    assert np.array_equal(d.rgb, decode_bytes(data).rgb)


def test_corrupt_and_truncated_jpeg_scan_data_are_refused_with_the_decoder_s_reason():
    data = bytearray(synthetic.smear_jpeg(3))
    with pytest.raises(DecodeError, match="truncated JPEG"):
        decode_bytes(bytes(data[: len(data) // 2]))
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    rng = np.random.default_rng(0)
    data[start:-2] = rng.integers(0, 255, len(data) - start - 2, dtype=np.uint8).tobytes()
    with pytest.raises(DecodeError, match="corrupt JPEG data"):
        decode_bytes(bytes(data))
