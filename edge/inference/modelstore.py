"""Installed models on a device: install a new one, keep the one before it, roll back, list.

Layout under ``model.install_dir``::

    current.json                       {"current": "<dir>/<file>.tflite", "previous": ..., "updated_at": ...}
                                       (null: the model bundled with the package)
    <name>-<version>-<sha12>/          the .tflite, its card (.json), the companions the card names
                                       (.ood.npz, .granulocyte.npz) and, if shipped, the .md report

``current.json`` is the only thing the daemon reads, and it is replaced in one ``os.replace``: a power cut
during an install leaves either the old model current or the new one, never half of each. Paths inside it
are relative to the folder so a copied or restored folder still works. The bundled model is the one in use
before the first install, so it is that install's "previous" (null) and `rollback` goes back to it. A model is
installed only after the
device's own loader accepted it (card present, sha256, labels, input shape, interpreter), so a SIGHUP can
never switch the daemon to a file it would refuse.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from edge.inference.classifier import (
    DEFAULT_MODEL,
    LABELS,
    Classifier,
    ModelCard,
    ModelLoadError,
    card_path_for,
    load_card,
    model_files,
    sha256_file,
)

if TYPE_CHECKING:
    from edge.config import ModelConfig

CURRENT = "current.json"
RELOAD_HINT = "the daemon picks it up on `systemctl reload edge-screen` (SIGHUP)"


class ModelStoreError(ModelLoadError):
    """A model that cannot be installed, or an install folder that cannot be used; ``str(err)`` is one line
    (a ModelLoadError, so the daemon and every command exit 3 on it)."""


@dataclass
class InstalledModel:
    path: Path  # the .tflite
    name: str
    version: str
    sha256: str
    current: bool = False
    previous: bool = False
    bundled: bool = False  # the model shipped inside the package (never copied into the install folder)
    lineage: Optional[dict] = None  # the card's "lineage": what it was made from (retrained models)

    @classmethod
    def of(cls, path: Path, card: ModelCard, current: bool = False, bundled: bool = False) -> InstalledModel:
        """The listing of the model at ``path`` from its card."""
        return cls(
            path=path,
            name=card.name,
            version=card.version,
            sha256=card.sha256,
            current=current,
            bundled=bundled,
            lineage=card.extra.get("lineage"),
        )

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "current": self.current,
            "previous": self.previous,
            "bundled": self.bundled,
            "lineage": self.lineage,
        }

    def describe_lineage(self) -> str:
        """One line: how this model came to be, from its card ("" for a model without a lineage record)."""
        return describe_lineage(self.lineage)


def describe_lineage(lineage: Optional[dict]) -> str:
    if not lineage:
        return ""
    parts = [str(lineage.get("summary") or lineage.get("kind") or "")]
    base = lineage.get("base") or {}
    if base.get("name"):
        parts.append(f"recipe of {base['name']} {base.get('version', '?')}")
    return "; ".join(p for p in parts if p)


def _installed(tfl: Path, bundled: bool = False) -> InstalledModel:
    try:
        card = load_card(card_path_for(tfl))
        return InstalledModel.of(tfl, card, bundled=bundled)
    except ModelLoadError:
        return InstalledModel(path=tfl, name=tfl.stem, version="?", sha256="?", bundled=bundled)


def _read_pointer(root: Path) -> dict:
    f = root / CURRENT
    try:
        d = json.loads(f.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ModelStoreError(f"{f} cannot be read: {e}") from None
    # "current": null is the bundled model, after a rollback past the first install.
    if not isinstance(d, dict) or not (
        isinstance(d.get("current"), str) or (d.get("current") is None and isinstance(d.get("previous"), str))
    ):
        raise ModelStoreError(f"{f} names no current model")
    return d


def current_model(install_dir: Path) -> Optional[Path]:
    """The current installed model's .tflite, or None when the bundled one is current (nothing installed,
    or rolled back to it): the daemon's fallback."""
    d = _read_pointer(Path(install_dir))
    return Path(install_dir) / d["current"] if d.get("current") else None


def model_in_use(model: ModelConfig) -> Path:
    """The model the config's ``[model]`` names: ``path`` when set, else the installed current model, else
    the bundled one. Read on every call, so a SIGHUP after `edge-screen model install` loads the new current
    model."""
    if model.path is not None:
        return model.path
    return current_model(model.install_dir) or DEFAULT_MODEL


def verify(tflite: Path, backend: str = "auto", num_threads: int = 1) -> Classifier:
    """The device's own loader on ``tflite`` plus one inference; returns the loaded Classifier."""
    from edge.inference.classifier import Classifier

    clf = Classifier(tflite, backend=backend, num_threads=num_threads)
    unknown = [lab for lab in clf.labels if lab not in LABELS]
    if unknown:
        raise ModelStoreError(f"model card labels {unknown} are not ones this device reports ({', '.join(LABELS)})")
    try:
        clf.warm_up()
    except Exception as e:  # noqa: BLE001 - an interpreter that loads but cannot invoke is not installable
        raise ModelStoreError(f"{tflite.name} loads but cannot run: {str(e).splitlines()[0] if str(e) else e}") from e
    return clf


class ModelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------------------------------ reads
    def pointer(self) -> dict:
        return _read_pointer(self.root)

    def current(self) -> Optional[Path]:
        return current_model(self.root)

    def list(self, bundled: bool = False) -> List[InstalledModel]:
        """The installed models; ``bundled=True`` adds the package's own model last (current when nothing
        installed is, previous when the first install replaced it)."""
        if not self.root.is_dir() or not (self.root / CURRENT).exists():
            if not bundled:
                return [] if not self.root.is_dir() else self._listed(None, None)
            b = _installed(DEFAULT_MODEL, bundled=True)
            b.current = True  # nothing installed: the bundled model is the one in use
            return ([] if not self.root.is_dir() else self._listed(None, None)) + [b]
        p = self.pointer()
        cur = self.root / p["current"] if p.get("current") else None
        prev = self.root / p["previous"] if p.get("previous") else None
        out = self._listed(cur, prev)
        if bundled:
            b = _installed(DEFAULT_MODEL, bundled=True)
            b.current = cur is None
            b.previous = bool(p) and cur is not None and prev is None
            out.append(b)
        return out

    def _listed(self, cur: Optional[Path], prev: Optional[Path]) -> List[InstalledModel]:
        out = []
        for d in sorted(x for x in self.root.iterdir() if x.is_dir() and not x.name.startswith(".")):
            for tfl in sorted(d.glob("*.tflite")):
                m = _installed(tfl)
                m.current, m.previous = tfl == cur, tfl == prev
                out.append(m)
        return out

    # ----------------------------------------------------------------------------------------- writes
    def _write_pointer(self, current: Optional[Path], previous: Optional[Path]) -> None:
        d = {
            "current": str(current.relative_to(self.root)) if current else None,
            "previous": str(previous.relative_to(self.root)) if previous else None,
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        import tempfile  # here: installing is rare, and every command that loads a model imports this module

        fd, tmp = tempfile.mkstemp(prefix=".current-", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(d, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / CURRENT)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def install(self, tflite: str | Path, backend: str = "auto") -> InstalledModel:
        """Check ``tflite`` with the device's loader, copy it and its card in, make it current."""
        src = Path(tflite)
        clf = verify(src, backend=backend)
        card = clf.card
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ModelStoreError(f"cannot create {self.root}: {e.strerror or e}") from None
        dest_dir = self.root / f"{card.name}-{card.version}-{card.sha256[:12]}"
        dest = dest_dir / src.name
        if not dest.is_file() or sha256_file(dest) != card.sha256:
            self._copy_in(src, dest_dir)
        verify(dest, backend=backend)  # the copy, not the source, is what the daemon will load
        old = self.current()  # None: the bundled model was in use, and becomes the previous one
        self._write_pointer(dest, old if old != dest else self._previous_or_none(dest))
        return InstalledModel.of(dest, card, current=True)

    def _previous_or_none(self, dest: Path) -> Optional[Path]:
        # Re-installing the current model keeps the previous one it already had (None: the bundled one).
        p = self.pointer()
        prev = self.root / p["previous"] if p.get("previous") else None
        return prev if prev != dest else None

    def _copy_in(self, src: Path, dest_dir: Path) -> None:
        import tempfile  # as in _write_pointer

        files = model_files(src)
        tmp = Path(tempfile.mkdtemp(prefix=".installing-", dir=self.root))
        try:
            for f in files:
                shutil.copy2(f, tmp / f.name)
            if dest_dir.exists():  # a damaged earlier copy of the same model
                shutil.rmtree(dest_dir)
            os.replace(tmp, dest_dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelStoreError(f"cannot copy {src.name} into {self.root}: {e.strerror or e}") from None
        _fsync_dir(self.root)

    def rollback(self, backend: str = "auto") -> InstalledModel:
        """Make the previous model current again (and the current one previous). After the first install
        the previous model is the bundled one: rolling back goes back to it, and rolling back again
        forward to the installed one."""
        p = self.pointer()
        if not p:
            raise ModelStoreError(f"no model installed in {self.root}: the bundled model is in use")
        cur = self.root / p["current"] if p.get("current") else None
        prev = self.root / p["previous"] if p.get("previous") else None
        clf = verify(prev if prev is not None else DEFAULT_MODEL, backend=backend)
        self._write_pointer(prev, cur)
        return InstalledModel.of(clf.path, clf.card, current=True, bundled=prev is None)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a folder; the rename itself is still atomic
    finally:
        os.close(fd)


__all__ = [
    "CURRENT",
    "InstalledModel",
    "ModelStore",
    "ModelStoreError",
    "RELOAD_HINT",
    "current_model",
    "describe_lineage",
    "model_in_use",
    "verify",
]
