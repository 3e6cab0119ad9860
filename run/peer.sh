# The benchmark peer, sourced by run/bench.sh: torchtitan at the commit the design pins, and a
# PyTorch 2.x from PyPI in a venv of its own, both in a cache outside the tree (never
# committed), made once:
#   $DSV3_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/dsv3)/torchtitan-<commit>   the checkout
#   $DSV3_CACHE/torch-<version>-venv                                           the venv
# DSV3_TORCHTITAN_GIT names where to clone torchtitan from (default GitHub; a local clone or
# mirror works offline); DSV3_TORCH_VERSION the PyTorch (default 2.15.0).

DSV3_TORCHTITAN_COMMIT=238fa9953e4aec2a62582121564273d7cbb1e9f1
DSV3_CACHE=${DSV3_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dsv3}
DSV3_TORCHTITAN_GIT=${DSV3_TORCHTITAN_GIT:-https://github.com/pytorch/torchtitan.git}
DSV3_TORCH_VERSION=${DSV3_TORCH_VERSION:-2.15.0}
DSV3_TORCHTITAN_DIR=$DSV3_CACHE/torchtitan-$DSV3_TORCHTITAN_COMMIT
DSV3_PEER_VENV=$DSV3_CACHE/torch-$DSV3_TORCH_VERSION-venv

# torchtitan's sources at the pinned commit (its Python package only; no work tree history).
dsv3_ensure_torchtitan() {
    [ -f "$DSV3_TORCHTITAN_DIR/torchtitan/models/deepseek_v3/__init__.py" ] && return 0
    local tmp
    tmp=$(mktemp -d "$DSV3_CACHE/torchtitan.XXXXXX")
    dsv3_log "fetching torchtitan $DSV3_TORCHTITAN_COMMIT from $DSV3_TORCHTITAN_GIT"
    { git clone -q --no-checkout "$DSV3_TORCHTITAN_GIT" "$tmp/git" &&
        git -C "$tmp/git" archive "$DSV3_TORCHTITAN_COMMIT" torchtitan | tar -x -C "$tmp" &&
        rm -rf "$tmp/git" && mv "$tmp" "$DSV3_TORCHTITAN_DIR"; } ||
        { rm -rf "$tmp"; dsv3_die "could not fetch torchtitan $DSV3_TORCHTITAN_COMMIT from $DSV3_TORCHTITAN_GIT (set DSV3_TORCHTITAN_GIT to a clone)"; }
}

# The peer's venv: PyTorch from PyPI and the packages torchtitan imports.
dsv3_ensure_peer_venv() {
    local stamp=$DSV3_PEER_VENV/.ready
    [ -f "$stamp" ] && return 0
    dsv3_log "installing PyTorch $DSV3_TORCH_VERSION and torchtitan's dependencies from PyPI into $DSV3_PEER_VENV"
    /usr/bin/python3 -m venv "$DSV3_PEER_VENV" &&
        "$DSV3_PEER_VENV/bin/python" -m pip install -q "torch==$DSV3_TORCH_VERSION" numpy \
            "torchdata>=0.8.0" "datasets>=2.21.0" tokenizers "tomli>=1.1.0" fsspec tyro tensorboard \
            einops pillow ||
        dsv3_die "could not install PyTorch $DSV3_TORCH_VERSION into $DSV3_PEER_VENV"
    touch "$stamp"
}
