"""Will the TFLite runtime be able to read this ARM board's /proc/cpuinfo? If not, say so instead of crashing.

litert and tflite_runtime size their kernels with the ``cpuinfo`` library, which on ARM Linux identifies the
cores from /proc/cpuinfo. When it finds no ARM core there it gives up, and the runtime then dereferences
what it did not get: the process dies with SIGSEGV while the interpreter is built, before any Python
error could say why (seen under qemu-user, whose /proc/cpuinfo is the x86 host's). A Pi's own kernel
always lists the fields, but a sandbox that hides /proc/cpuinfo (systemd ``ProcSubset=pid``), a container
that rewrites it, or a board whose kernel omits them would crash the daemon in a restart loop.

Which contents are enough was measured with ai-edge-litert 2.3.0 on emulated aarch64 (scripts/pi_check.sh,
README "Raspberry Pi"): a real Pi 4 listing loads, and so does any listing with ``Features`` and ``CPU
architecture`` lines, or with ``CPU implementer`` and ``CPU part`` lines; none, only ``processor`` lines,
``Features`` alone, ``CPU implementer`` alone or ``CPU part`` alone crash it.
"""

from __future__ import annotations

import platform
from typing import Optional

ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")


def problem(machine: Optional[str] = None, path: str = "/proc/cpuinfo") -> Optional[str]:
    """None when the runtime can identify the cores (or this is not ARM), else a one-line reason."""
    machine = machine or platform.machine()
    if machine.lower() not in ARM_MACHINES:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            keys = {line.split(":", 1)[0].strip() for line in f if ":" in line}
    except OSError as e:
        return (
            f"{path} cannot be read ({e.strerror or e}); the TFLite runtime would crash (SIGSEGV) "
            f"identifying the CPU: do not hide it from edge-screen (e.g. systemd ProcSubset=pid)"
        )
    if ({"Features", "CPU architecture"} <= keys) or ({"CPU implementer", "CPU part"} <= keys):
        return None
    return (
        f"{path} lists no ARM core (no 'Features'/'CPU architecture' or 'CPU implementer'/'CPU part' "
        f"lines): the TFLite runtime would crash (SIGSEGV) identifying the CPU, so the model is not "
        f"loaded (an emulator or a container that rewrites /proc/cpuinfo?)"
    )
