"""Helpers for the review web app's tests and scripts/bench_web.py: a database with samples whose image files
exist, users made through the real CLI, and `edge-screen serve` as a real subprocess.

The fields are recorded through :meth:`edge.store.database.Store.record_many` with the shipped card's sample rule, the
same call the pipeline makes, so the samples' aggregates are the real ones; the images are real smears from
../shared when present, else synthetic ones (edge.imaging.synthetic).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Optional

from daemon_support import ROOT, _env, poll, real_images

from edge.imaging.synthetic import smear_jpeg
from edge.inference.classifier import DEFAULT_MODEL, card_path_for
from edge.store.database import Store
from edge.store.records import ImageRecord
from edge.store.samples import SampleRule
from edge.store.schema import utcnow
from edge.vocabulary import LABELS

DEVICE = "test-device"
PASSWORD = "correct horse battery"


def card() -> dict:
    """The shipped card when there is one (its labels and sample rule), else a minimal one."""
    p = card_path_for(DEFAULT_MODEL)
    if p.is_file():
        return json.loads(p.read_text())
    return {
        "name": "standin",
        "labels": list(LABELS),
        "threshold": 0.5,
        "sample_rule": {
            "statistic": "quantile",
            "q": 0.5,
            "threshold": 0.5,
            "review_band": [0.3, 0.7],
            "min_readable": 2,
            "disagreement": 0.1,
            "field_threshold": 0.5,
        },
    }


def card_rule() -> Optional[SampleRule]:
    """The sample rule of :func:`card`, what a store recording its fields is opened with."""
    c = card()
    return SampleRule.from_card(c, float(c.get("threshold", 0.5)))


def write_config(folder: Path, model: Optional[Path] = None, port: int = 8080) -> Path:
    p = folder / "edge-screen.toml"
    p.write_text(
        f'[daemon]\ninbox = "{folder / "inbox"}"\ndevice_id = "{DEVICE}"\nlog_level = "INFO"\n'
        f'[database]\nurl = "sqlite:///{folder / "db.sqlite"}"\n'
        + (f'[model]\npath = "{model}"\nnum_threads = 1\n' if model else "")
        + f'[web]\nhost = "127.0.0.1"\nport = {port}\nsession_minutes = 60\n'
    )
    return p


@dataclass
class SampleSpec:
    sample_id: str
    n: int
    scores: List[float]  # one malignant score per field (cycled)
    close: bool = True


def _files(folder: Path, n: int, start: int, used: Optional[set] = None) -> List[Path]:
    """``n`` fields into ``folder``; ``used``: real smears other samples already hold (left out, so that no
    field of one sample is a duplicate of another's), updated with these."""
    folder.mkdir(parents=True, exist_ok=True)
    real = [p for p in real_images(start + n) if used is None or p not in used][start : start + n]
    if used is not None:
        used.update(real)
    out = []
    for i in range(n):
        dst = folder / f"field-{i:03d}.jpg"
        dst.write_bytes(real[i].read_bytes() if i < len(real) else smear_jpeg(seed=start + i, size=(640, 480)))
        out.append(dst)
    return out


def build_db(folder: Path, specs: List[SampleSpec], device: str = DEVICE) -> Path:
    """A store in ``folder/db.sqlite`` with one sample per spec (closed -> ready when ``close``)."""
    c = card()
    db = folder / "db.sqlite"
    with Store.open(db, device_id=device, sample_rule=card_rule()) as store:
        sha = hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()
        model_id = store.ensure_model(c.get("name", "model"), sha, c)
        start = 0
        for spec in specs:
            recs = []
            for i, path in enumerate(_files(folder / "inbox" / spec.sample_id, spec.n, start)):
                score = spec.scores[i % len(spec.scores)]
                label = LABELS[1 + i % 3] if score >= 0.5 else LABELS[0]
                probs = {lab: (score if lab == label else (1 - score) / 3) for lab in LABELS}
                recs.append(
                    ImageRecord(
                        path=str(path),
                        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                        status="classified",
                        label=label,
                        probabilities=probs,
                        malignant_score=score,
                        verdict="malignant" if score >= 0.5 else "benign",
                        needs_review=0.3 < score < 0.7,
                        model_id=model_id,
                        model_name=c.get("name"),
                        model_sha256=sha,
                        sample_id=spec.sample_id,
                        recorded_at=utcnow() - timedelta(minutes=5),
                        bytes=path.stat().st_size,
                    )
                )
            start += spec.n
            store.record_many(recs)
            if spec.close:
                store.samples.close(spec.sample_id)
    return db


def _screen(db: Path, inbox: Path, model: Path, files: List[Path], device: str) -> None:
    from edge.config import Config
    from edge.inference.classifier import Classifier
    from edge.pipeline.settings import PipelineSettings
    from edge.pipeline.stages import Pipeline

    clf = Classifier(model, num_threads=1)
    with Store.open(db, device_id=device, sample_rule=clf.card.sample_rule) as store:
        pipe = Pipeline(PipelineSettings.of(Config(), clf.card, inbox=inbox), clf, store=store)
        for _ in pipe.run_paths(files):
            pass


def screen_db(folder: Path, model: Path, samples: Dict[str, int], device: str = DEVICE, close: bool = True) -> Path:
    """A store in ``folder/db.sqlite`` whose samples were screened by the real pipeline and model, as the
    daemon does it (cells found, scored and their boxes recorded): ``samples`` maps a sample id to its
    number of fields (real smears from ../shared, spread over the classes, else synthetic ones)."""
    db, inbox = folder / "db.sqlite", folder / "inbox"
    files, start, used = [], 100, set()
    for sid, n in samples.items():
        files += _files(inbox / sid, n, start, used)
        start += n
    _screen(db, inbox, model, files, device)
    if close:
        with Store.open(db, device_id=device) as store:
            for sid in samples:
                store.samples.close(sid)
    return db


def screen_more(folder: Path, model: Path, sample_id: str, pictures: Dict[str, bytes], device: str = DEVICE) -> None:
    """More fields into a sample (file name -> bytes), screened by the real pipeline: what the daemon does
    when a technologist adds fields to a sample's folder, whatever its state."""
    folder_s = folder / "inbox" / sample_id
    folder_s.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in pictures.items():
        (folder_s / name).write_bytes(data)
        files.append(folder_s / name)
    _screen(folder / "db.sqlite", folder / "inbox", model, files, device)


def add_user(config: Path, name: str, role: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    """`edge-screen user add` with the password on stdin, as an installer types it."""
    return subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(config), "user", "add", name, "--role", role],
        input=password + "\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def q(db: Path, query: str, *args) -> List[Dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(query, args)]
    finally:
        con.close()


def execute(db: Path, query: str, *args) -> None:
    with sqlite3.connect(db, timeout=10) as con:
        con.execute(query, args)


class ServeProc:
    """`python -m edge serve --port 0` as a real subprocess; ``url`` comes from its log line."""

    def __init__(self, config: Path, *args: str):
        self.log = config.parent / f"serve-{time.monotonic_ns()}.log"
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config), "serve", "--port", "0", *args],
            cwd=ROOT,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        self.url = poll(self._url, what="`edge-screen serve` to log its URL").rstrip("/")

    def _url(self) -> Optional[str]:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.output()}")
        m = re.search(r"review app on (http://\S+)", self.output())
        return m.group(1) if m else None

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._logf.close()


def flat_jpeg(value: int) -> bytes:
    """A 224x224 JPEG of one grey level: glass without a cell (or blank, for values near white)."""
    import numpy as np
    import simplejpeg

    return simplejpeg.encode_jpeg(np.full((224, 224, 3), value, np.uint8), colorspace="RGB")


def noise_jpeg(seed: int) -> bytes:
    """A 224x224 JPEG of uniform noise: not a smear."""
    import numpy as np
    import simplejpeg

    rng = np.random.default_rng(seed)
    return simplejpeg.encode_jpeg(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), colorspace="RGB")


def image_rows(db: Path, sample_id: str) -> List[dict]:
    """A sample's image rows by path, their segmentation JSON decoded."""
    rows = q(db, "SELECT * FROM images WHERE sample_id = ? ORDER BY path", sample_id)
    for r in rows:
        r["segmentation"] = json.loads(r["segmentation"]) if r["segmentation"] else None
    return rows
