#!/usr/bin/env bash
# Install the Prometheus server + promtool used by tests/deploy (Debian/Ubuntu, apt).
# Idempotent: does nothing when both binaries are already on PATH. Never starts a
# service: tests run their own server on a free loopback port with a temporary TSDB.
# Exit status: 0 installed (or already there), 1 installation impossible (message says why).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: no apt-get here; install prometheus >= 2.42 (server + promtool) yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install.sh: not root and no passwordless sudo; run: apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "==> installing prometheus (apt)" >&2
$SUDO apt-get update -q >&2
$SUDO apt-get install -y -q --no-install-recommends prometheus >&2
# The Debian package enables a systemd unit; on machines with systemd, keep it off so it
# does not hold port 9090 and a TSDB in /var/lib/prometheus for nothing.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null
