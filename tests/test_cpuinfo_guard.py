"""On ARM, a /proc/cpuinfo the TFLite runtime cannot read makes it crash (SIGSEGV) building the interpreter;
edge-screen refuses the model with a one-line reason instead (exit 3). Which listings load and which crash
was measured with ai-edge-litert 2.3.0 under emulation (edge/inference/backends/cpuinfo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.inference.backends import cpuinfo
from edge.inference.classifier import Classifier, ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
PI4 = (ROOT / "scripts" / "pi" / "cpuinfo-arm64").read_text()
PI4_32 = (ROOT / "scripts" / "pi" / "cpuinfo-armhf").read_text()


def _only(text: str, keys) -> str:
    return "".join(ln + "\n" for ln in text.splitlines() if ln.split(":")[0].strip() in keys or not ln.strip())


X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse sse2 avx2\nmodel name\t: Xeon\n\n"


@pytest.mark.parametrize(
    "text, loads",
    [
        (PI4, True),
        (PI4_32, True),
        (_only(PI4, {"processor", "Features", "CPU architecture"}), True),
        (_only(PI4, {"processor", "CPU implementer", "CPU part", "CPU variant", "CPU revision"}), True),
        (X86, False),  # what qemu-user shows
        ("", False),
        (_only(PI4, {"processor", "Model"}), False),
        (_only(PI4, {"processor", "Features"}), False),
        (_only(PI4, {"processor", "CPU implementer"}), False),
        (_only(PI4, {"processor", "CPU part"}), False),
    ],
)
def test_listings_that_crashed_the_runtime_are_refused(tmp_path, text, loads):
    p = tmp_path / "cpuinfo"
    p.write_text(text)
    why = cpuinfo.problem("aarch64", str(p))
    assert (why is None) == loads, why
    if not loads:
        assert "crash" in why and "\n" not in why


def test_an_unreadable_cpuinfo_is_refused_and_off_arm_nothing_is_checked(tmp_path):
    why = cpuinfo.problem("armv7l", str(tmp_path / "missing"))
    assert "cannot be read" in why and "ProcSubset" in why
    assert cpuinfo.problem("x86_64", str(tmp_path / "missing")) is None


def test_the_classifier_refuses_the_model_instead_of_crashing(monkeypatch):
    # This machine's own /proc/cpuinfo is an x86 listing: seen from "ARM" it is what crashed under qemu.
    monkeypatch.setattr(cpuinfo.platform, "machine", lambda: "aarch64")
    with pytest.raises(ModelLoadError, match="lists no ARM core"):
        Classifier()


def test_the_daemon_unit_does_not_hide_proc_cpuinfo_from_the_runtime():
    """systemd's ProcSubset=pid hides /proc/cpuinfo (procfs subset=pid): on a Pi the daemon would be
    refused its model (before the guard: crashed in a restart loop). x86 reads CPUID and never noticed."""
    unit = (ROOT / "systemd" / "edge-screen.service").read_text().splitlines()
    settings = [ln.split("=", 1) for ln in unit if "=" in ln and not ln.lstrip().startswith("#")]
    assert ["ProcSubset", "pid"] not in [[k.strip(), v.strip()] for k, v in settings]
    assert ["ProtectProc", "invisible"] in [[k.strip(), v.strip()] for k, v in settings]  # other pids stay hidden
