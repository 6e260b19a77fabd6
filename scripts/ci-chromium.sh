#!/bin/sh
# Install Chromium from the distribution's packages when it is missing, so that tests/test_report.py can
# render the HTML report headless. Debian names the package "chromium"; Ubuntu's apt "chromium-browser"
# is a snap shim that cannot run in a container, so only Debian-style names are tried.
set -eu
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "chromium: already installed ($(command -v chromium || command -v chromium-browser))"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ci-chromium: not root and no sudo; cannot install chromium" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
command -v chromium >/dev/null 2>&1 || { echo "ci-chromium: chromium still not on PATH after install" >&2; exit 1; }
echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"
