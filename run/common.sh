# Shared by the run/ scripts: system packages, the Python test environment, the build.
# Sourced, not executed. Every function prints what it does and fails with a clear message.

DSV3_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DSV3_BUILD_DIR=${BUILD_DIR:-$DSV3_ROOT/build}
DSV3_VENV=${DSV3_VENV:-$DSV3_ROOT/.venv}

# Debian/Ubuntu packages to build and run dsv3.
DSV3_RUN_PACKAGES=(gcc g++ make pkg-config meson ninja-build openmpi-bin libopenmpi-dev
    libhdf5-openmpi-dev libopenblas-dev libpcre2-dev libjson-c-dev zlib1g-dev)
# ... to plot a run's metrics (run/plot.sh) ...
DSV3_PLOT_PACKAGES=(python3 python3-matplotlib)
# ... and to test it: CMocka, the PyTorch reference (Debian's CPU torch), a venv for PyPI
# packages, clang and its runtime for the libFuzzer harnesses, matplotlib for run/plot.sh.
DSV3_TEST_PACKAGES=(libcmocka-dev python3 python3-venv python3-numpy python3-torch clang
    libclang-rt-dev python3-matplotlib)

dsv3_log() { printf '[dsv3] %s\n' "$*"; }
dsv3_die() { printf '[dsv3] error: %s\n' "$*" >&2; exit 1; }

# Installs the missing packages of the given lists with apt-get (as root or through sudo).
dsv3_ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        dsv3_die "these packages are missing and this machine has no apt-get: ${missing[*]}
Install their equivalents (OpenMPI with mpicc/mpiexec, parallel HDF5, OpenBLAS, PCRE2, json-c, zlib,
CMocka, meson >= 1.0, ninja, Python 3 with torch and venv, clang with libFuzzer) and run again."
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || dsv3_die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    dsv3_log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The Python environment of the tests: Debian's python3 (which sees Debian's torch) in a venv
# with --system-site-packages, plus the PyPI packages of tests/requirements.txt.
dsv3_ensure_venv() {
    local py=/usr/bin/python3 req=$DSV3_ROOT/tests/requirements.txt stamp=$DSV3_VENV/.requirements
    if [ ! -x "$DSV3_VENV/bin/python" ]; then
        dsv3_log "creating the test venv in $DSV3_VENV"
        "$py" -m venv --system-site-packages "$DSV3_VENV"
    fi
    if [ -f "$req" ] && ! cmp -s "$req" "$stamp"; then
        if grep -qv '^\s*\(#\|$\)' "$req"; then
            dsv3_log "installing the PyPI packages of tests/requirements.txt"
            "$DSV3_VENV/bin/python" -m pip install -q -r "$req"
        fi
        cp "$req" "$stamp"
    fi
    "$DSV3_VENV/bin/python" -c 'import torch' 2>/dev/null ||
        dsv3_die "the test venv cannot import torch: install python3-torch and remove $DSV3_VENV"
}

# Configures (once) and builds a build directory: dsv3_ensure_build DIR [meson options...]
dsv3_ensure_build() {
    local dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        dsv3_log "configuring $dir"
        meson setup "$dir" "$DSV3_ROOT" "$@" >"$dir.setup.log" 2>&1 ||
            { cat "$dir.setup.log" >&2; dsv3_die "meson setup failed (log above)"; }
        rm -f "$dir.setup.log"
    fi
    dsv3_log "building $dir"
    ninja -C "$dir" >/dev/null || { ninja -C "$dir" >&2; dsv3_die "build failed (errors above)"; }
}

# Environment for OpenMPI: root is allowed (containers, CI) when running as root.
dsv3_mpi_env() {
    if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
}
