#!/usr/bin/env bash
# Create the project virtualenv (default .venv) with `python3 -m venv` when it is missing or
# half-made (no pip), so `make` works on a fresh machine. Debian and Ubuntu ship venv without
# ensurepip: as root the python3-venv package is installed non-interactively, anyone else gets
# the exact command to run. Never reads stdin.
#
# Usage: scripts/ensure-venv.sh [VENV_DIR]    Environment: PYTHON (default python3).
set -euo pipefail

VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

step() { printf 'ensure-venv: %s\n' "$*"; }
die() {
    printf 'ensure-venv: error: %s\n' "$*" >&2
    exit 1
}

check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 ||
        die "$PYTHON not found. Install Python 3.11 or newer, or set PYTHON=/path/to/python3.11"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "csext needs Python 3.11 or newer but $PYTHON is $("$PYTHON" -V 2>&1);" \
            "set PYTHON=python3.11 (or newer)"
}

venv_package() {
    "$PYTHON" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])'
}

install_venv_support() {
    local pkg
    pkg="$(venv_package)"
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "$PYTHON cannot create virtualenvs (no ensurepip). Run:" \
            "sudo apt-get install -y python3-venv $pkg   (then run make again)"
    fi
    step "installing python3-venv $pkg with apt-get (non-interactive)"
    apt-get update -q </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv "$pkg" </dev/null
}

create() {
    step "creating virtualenv $VENV with $PYTHON -m venv"
    "$PYTHON" -m venv "$VENV" </dev/null
}

main() {
    if [[ -x "$VENV/bin/python" && -x "$VENV/bin/pip" ]]; then
        step "virtualenv $VENV exists"
        return
    fi
    check_python
    if [[ -e "$VENV" ]]; then
        step "removing half-made virtualenv $VENV (no pip in it)"
        rm -rf -- "$VENV"
    fi
    if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
        install_venv_support
    fi
    if ! create; then
        rm -rf -- "$VENV"
        install_venv_support
        create
    fi
}

main "$@"
