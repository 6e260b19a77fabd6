"""What is not a smear, for the cell tests (:func:`trainer.robustness.run`): noise, blank glass, red cells only
(every white cell painted out), natural photographs and corrupt JPEGs. None should be called malignant
with confidence; most should be refused."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

from edge.imaging.decode import DecodeError, decode_bytes, decode_file
from edge.imaging.preprocess import crop_resize
from edge.inference.classifier import Classifier

from .robustness import Judge, Outcome, paint_out, rate

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "imagenet-mobilenetv2"


def ood_fields(fields: Sequence[np.ndarray], clf: Classifier, rng: np.random.Generator, n: int = 40) -> dict:
    s = clf.preprocessing.size
    sets = {
        "uniform_noise": [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(n)],
        "gaussian_noise": [
            np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), (s, s, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)
        ],
        "blank_glass": [
            np.clip(np.full((s, s, 3), np.median(f.reshape(-1, 3), 0)) + rng.normal(0, 2, (s, s, 3)), 0, 255).astype(
                np.uint8
            )
            for f in fields[:n]
        ],
        "red_cells_only": [paint_out(f, clf) for f in fields[:: max(1, len(fields) // (2 * n))][: 2 * n]],
    }
    photos = sorted(p for p in PHOTOS.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if photos:
        imgs = [decode_file(p).rgb for p in photos]
        # Crops and flips of the few photos there are: different framings of the same natural scenes.
        sets["natural_photos"] = [
            crop_resize(
                np.ascontiguousarray(
                    (img if k % 2 == 0 else img[:, ::-1])[int(img.shape[0] * f) :, int(img.shape[1] * f) :]
                ),
                clf.preprocessing,
            )
            for img in imgs
            for k, f in enumerate((0.0, 0.1, 0.2, 0.3))
        ]
    return sets


def corrupt_jpegs(fields: Sequence[np.ndarray], rng: np.random.Generator, n: int = 20) -> List[bytes]:
    out = []
    for f in fields[:n]:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        data = bytearray(buf.tobytes())
        sos = data.index(b"\xff\xda")
        body = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
        if len(out) % 2 == 0:  # random scan data behind a valid header
            scan = rng.integers(0, 255, len(data) - body - 2, dtype=np.uint8).tobytes()
            data[body:-2] = scan
        else:  # 200 flipped bytes in the scan
            for k in rng.integers(body, len(data) - 2, 200):
                data[k] ^= 0xFF
        out.append(bytes(data))
    return out


def ood(judge: Judge, fields, clf: Classifier, rng: np.random.Generator, prog) -> dict:
    res = {}
    for name, imgs in ood_fields(fields, clf, rng).items():
        outs = []
        for i, img in enumerate(imgs):
            outs.append(judge(img))
            prog(f"ood {name}", i + 1, len(imgs))
        res[name] = {
            "n": len(outs),
            "refused": rate([o.refused for o in outs]),
            "refused_or_flagged": rate([o.refused or o.needs_review for o in outs]),
            "confident_malignant": int(sum(o.confident_malignant for o in outs)),
            "max_score_when_classified": max((o.score for o in outs if not o.refused), default=None),
        }
    outs = []
    for data in corrupt_jpegs(fields, rng):
        try:
            outs.append(judge(decode_bytes(data, target=clf.preprocessing.size).rgb))
        except DecodeError as e:
            outs.append(Outcome(refused=True, reason=str(e)))
    res["corrupt_jpeg"] = {
        "n": len(outs),
        "refused": rate([o.refused for o in outs]),
        "confident_malignant": int(sum(o.confident_malignant for o in outs)),
    }
    return res
