#!/usr/bin/env bash
# edge-station set-up and entry point for a fresh Debian 12 / Raspberry Pi OS machine.
#
#   ./dev.sh simulate [ARGS]   installs what the station needs, then runs it on simulated hardware
#   ./dev.sh test [PYTEST ARGS] installs what the tests need, then runs ruff, mypy and the test suite
#   ./dev.sh test-long | bench  the soak/crash variants, and the benchmarks (make test-long / make bench)
#
# Debian packages are installed with apt-get (as root, or through sudo when it needs no password);
# without those rights it says which packages to install and stops.
set -euo pipefail
cd "$(dirname "$0")"

DEBS_RUN=(python3 python3-venv python3-dev gcc libzbar0 mosquitto)
DEBS_TEST=("${DEBS_RUN[@]}" chromium systemd make sqlite3 shellcheck)
VENV=.venv

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing_debs() {
    local out="" p
    for p in "$@"; do
        installed "$p" && continue
        [ "$p" = chromium ] && installed chromium-browser && continue
        out="$out $p"
    done
    echo "$out "
}

ensure_debs() {
    command -v dpkg-query >/dev/null || { echo "dev.sh: not a Debian system; install by hand: $*" >&2; return 0; }
    local missing
    missing=$(missing_debs "$@")
    [ -z "${missing// /}" ] && return 0
    echo "dev.sh: installing Debian packages:$missing" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo="sudo"
        else
            echo "dev.sh: these Debian packages are missing and I lack the rights to install them:" >&2
            echo "    sudo apt-get install -y$missing" >&2
            exit 1
        fi
    fi
    $sudo apt-get update -qq
    # Raspberry Pi OS names Debian's chromium "chromium-browser" on some images.
    case " $missing " in
        *" chromium "*)
            apt-cache show chromium >/dev/null 2>&1 || missing=${missing// chromium / chromium-browser } ;;
    esac
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

ensure_venv() {
    local stamp="$VENV/.installed"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        touch "$stamp"
    fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
    simulate)
        ensure_debs "${DEBS_RUN[@]}"
        ensure_venv
        exec "$VENV/bin/edge-station" simulate "$@"
        ;;
    run)
        ensure_debs "${DEBS_RUN[@]}"
        ensure_venv
        exec "$VENV/bin/edge-station" run "$@"
        ;;
    test | test-long | bench)
        ensure_debs "${DEBS_TEST[@]}"
        ensure_venv
        export PATH="$PWD/$VENV/bin:$PATH:/usr/sbin:/sbin"
        if [ "$cmd" = bench ]; then
            # With no file named, every benchmark; otherwise just the ones named.
            [ $# -eq 0 ] && set -- tests/bench
            exec "$VENV/bin/python" -m pytest -m bench -p no:randomly "$@"
        fi
        # Compiled once here: every controller and simulator process the tests start would
        # otherwise compile the sources again where PYTHONDONTWRITEBYTECODE is set (CI images).
        "$VENV/bin/python" -m compileall -q controller drivers local_ui cloud_sync simulators >/dev/null
        echo "== ruff format --check" && "$VENV/bin/ruff" format --check .
        echo "== ruff check" && "$VENV/bin/ruff" check .
        echo "== mypy" && "$VENV/bin/mypy"
        if [ "$cmd" = test-long ]; then
            exec "$VENV/bin/python" -m pytest -m "not bench" "$@"
        fi
        # The whole suite runs on two pytest-xdist workers (EDGE_TEST_JOBS; 1 for one process),
        # a test file's tests on one worker (some share a station across the file, in order).
        if [ $# -eq 0 ] && [ "${EDGE_TEST_JOBS:-2}" != 1 ]; then
            set -- -n "${EDGE_TEST_JOBS:-2}" --dist loadfile
        fi
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        sed -n '2,10p' "$0"
        exit 2
        ;;
esac
