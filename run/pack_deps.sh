#!/usr/bin/env bash
# Packs what dsv3 needs besides a C compiler, CUDA, meson and ninja -- Open MPI, parallel HDF5,
# OpenBLAS, PCRE2, json-c, zlib's headers, CMocka and pkg-config -- from this Debian/Ubuntu
# machine's packages into one relocatable tarball, for machines without package access
# (air-gapped cluster nodes with a glibc at least as new as this machine's):
#
#   run/pack_deps.sh OUT.tar.gz                         here (installs the packages if missing)
#   mkdir -p DIR && tar -xzf OUT.tar.gz -C DIR          there, DIR anywhere
#   DSV3_DEPS_PREFIX=DIR ./tests/gpu/run.sh             run/common.sh then uses DIR
#
# The bundle holds, under DIR as under /: the files of the packages (dpkg -L) but documentation,
# manuals, locales, static libraries and LAPACK; the links Debian's alternatives system makes
# for them (libopenblas.so.0, cblas.h, mpiexec, hdf5.pc...), which no package holds; and the
# shared libraries all of these load (ldd) but the ones every Debian/Ubuntu system has. Every
# link becomes relative inside DIR (or, where its target is left out, a copy of the target).
# DIR/dsv3-deps.txt lists the packages, the libraries and the library folders (run/common.sh
# reads it).
set -euo pipefail
source "$(dirname "$0")/common.sh"

# The libraries every Debian/Ubuntu system has (apt and grep need them): never packed, so
# those of the machine are used. glibc and the GCC runtime must match the compiler there.
PACK_BASE_PACKAGES=(libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 libudev1 libpcre2-8-0)
# Libraries whose whole package is packed: PMIx (the runtime of Open MPI's launcher) loads
# plugins and help files of its own package.
PACK_PLUGIN_LIBRARIES=(libpmix.so.2)
# What documentation, manuals, static linking and LAPACK (OpenBLAS's, 7 MiB: dsv3 calls none)
# need, and dsv3 does not.
PACK_SKIPPED_PATHS='^/usr/share/(doc|doc-base|man|info|locale|lintian|bug)/|\.a$|/liblapack\.so|/lapack[^/]*\.pc$'

usage() { dsv3_die "usage: run/pack_deps.sh OUT.tar.gz"; }

# The packages to pack, one a line: the build packages of DSV3_RUN_PACKAGES but the compilers and
# build tools, CMocka and PMIx's, each with the installed packages it depends on that come from
# its own source package (libopenblas-dev's libopenblas0-pthread, pkg-config's pkgconf), but the
# base packages.
pack_package_list() {
    local -A seen=() base=()
    local queue=() p dep origin library
    for p in "${PACK_BASE_PACKAGES[@]}"; do base[$p]=1; done
    for p in "${DSV3_RUN_PACKAGES[@]}" libcmocka-dev; do
        [ -n "${DSV3_TOOL_COMMANDS[$p]:-}" ] || queue+=("$p")
    done
    for library in "${PACK_PLUGIN_LIBRARIES[@]}"; do
        queue+=("$(dpkg -S "*/$library" | sed -n '1s/[:,].*//p')")
    done
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        [ -z "${seen[$p]:-}" ] && [ -z "${base[$p]:-}" ] || continue
        seen[$p]=1
        echo "$p"
        origin=$(dpkg-query -W -f='${source:Package}' "$p")
        for dep in $(installed_dependencies "$p"); do
            if [ "$(dpkg-query -W -f='${source:Package}' "$dep")" = "$origin" ]; then queue+=("$dep"); fi
        done
    done
}

# The installed packages a package depends on (of alternatives, those installed).
installed_dependencies() { # installed_dependencies PACKAGE
    local dep
    dpkg-query -W -f='${Depends}\n' "$1" | tr ',|' '\n\n' | sed 's/([^)]*)//; s/:any//' |
        while read -r dep _; do
            if dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'install ok installed'; then
                echo "$dep"
            fi
        done
}

# A path with its folder resolved (/lib is /usr/lib on merged-/usr systems), the name kept.
canonical_parent() { echo "$(readlink -f "$(dirname "$1")")/$(basename "$1")"; }

# The paths the packages install, without the skipped ones, folders left out.
pack_package_paths() { # pack_package_paths PACKAGE...
    local p path
    for p in "$@"; do
        dpkg -L "$p" | grep -Ev "$PACK_SKIPPED_PATHS" | while read -r path; do
            if [ -L "$path" ] || [ -f "$path" ]; then canonical_parent "$path"; fi
        done
    done | sort -u
}

# The links of every alternative (master and slaves) that exist on this machine.
alternative_links() {
    local name link
    update-alternatives --get-selections | while read -r name _; do
        update-alternatives --query "$name" | sed -n '1,/^$/{s/^Link: //p; s/^ [^ ]* \(\/.*\)/\1/p}'
    done | while read -r link; do
        if [ -L "$link" ]; then canonical_parent "$link"; fi
    done
}

# Copies the regular files of a path list into the stage.
copy_files() { # copy_files STAGE < PATHS
    local stage=$1 path
    while read -r path; do
        [ -L "$path" ] && continue
        mkdir -p "$stage$(dirname "$path")"
        cp -p "$path" "$stage$path"
    done
}

# Recreates links in the stage, relative to their resolved target there; a link whose target is
# not in the stage becomes a copy of the target with MISSING=copy, and is dropped with skip.
copy_links() { # copy_links STAGE MISSING < PATHS
    local stage=$1 missing=$2 path target
    while read -r path; do
        [ -L "$path" ] || continue
        target=$(readlink -f "$path") || continue
        if [ -e "$stage$target" ]; then
            mkdir -p "$stage$(dirname "$path")"
            ln -sfn --relative "$stage$target" "$stage$path"
        elif [ "$missing" = copy ] && [ -f "$target" ]; then
            mkdir -p "$stage$(dirname "$path")"
            cp -p "$target" "$stage$path"
        fi
    done
}

# The package owning a library as ldd names it (dpkg may know it under /lib or /usr/lib).
owner_package() { # owner_package PATH
    local path
    for path in "$1" "$(readlink -f "$1")" "/usr$1" "${1#/usr}"; do
        dpkg -S "$path" 2>/dev/null | sed -n '1s/[:,].*//p' | grep . && return 0
    done
    echo unknown
}

# The shared libraries that the stage's programs and libraries load and the stage lacks, but
# the base packages': copied with their soname links, and listed as "library NAME PACKAGE
# VERSION" lines.
copy_needed_libraries() { # copy_needed_libraries STAGE
    local stage=$1 file name path package real
    local -A base=() copied=()
    for package in "${PACK_BASE_PACKAGES[@]}"; do base[$package]=1; done
    while read -r file; do
        ldd "${file#"$stage"}" 2>/dev/null | awk '$2 == "=>" {print $1, $3}' || true
    done < <(find "$stage" -type f \( -perm -u+x -o -name '*.so*' \)) | sort -u |
        while read -r name path; do
            [ "$path" != not ] || dsv3_die "a packed program needs $name, which this machine lacks"
            [ -z "${copied[$name]:-}" ] || continue
            copied[$name]=1
            package=$(owner_package "$path")
            [ -z "${base[$package]:-}" ] || continue
            real=$(readlink -f "$path")
            path=$(canonical_parent "$path")
            [ -e "$stage$path" ] && continue
            mkdir -p "$stage$(dirname "$real")"
            cp -p "$real" "$stage$real"
            [ "$path" = "$real" ] || ln -sfn --relative "$stage$real" "$stage$path"
            echo "library $name $package $(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || echo -)"
        done
}

# dsv3-deps.txt: what run/common.sh needs to use the bundle, and what it was made of.
write_manifest() { # write_manifest STAGE LIBRARY_LINES PACKAGE...
    local stage=$1 libraries=$2
    shift 2
    {
        echo "# dsv3 dependency bundle (run/pack_deps.sh)"
        echo "# packed on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
        echo "multiarch $(gcc -print-multiarch)"
        find "$stage" -name 'lib*.so.*' -printf '%h\n' | sort -u | sed "s|^$stage/|libdir |"
        dpkg-query -W -f='package ${Package} ${Version}\n' "$@"
        echo "$libraries"
    } >"$stage/dsv3-deps.txt"
}

main() {
    [ $# -eq 1 ] || usage
    local out stage packages libraries
    out=$(realpath -m "$1")
    case $out in *.tar.gz | *.tgz) ;; *) usage ;; esac
    command -v dpkg-query >/dev/null 2>&1 ||
        dsv3_die "run/pack_deps.sh packs Debian/Ubuntu packages: this machine has no dpkg"
    dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}" libcmocka-dev
    stage=$(mktemp -d)
    trap "rm -rf '$stage' '$stage.paths'" EXIT
    packages=$(pack_package_list)
    mapfile -t packages <<<"$packages"
    dsv3_log "packing ${#packages[@]} packages: ${packages[*]}"
    pack_package_paths "${packages[@]}" >"$stage.paths"
    copy_files "$stage" <"$stage.paths"
    copy_links "$stage" copy <"$stage.paths"
    alternative_links | copy_links "$stage" skip
    rm -f "$stage.paths"
    libraries=$(copy_needed_libraries "$stage")
    dsv3_log "and $(grep -c . <<<"$libraries") libraries they load: $(awk '{print $2}' <<<"$libraries" | xargs)"
    write_manifest "$stage" "$libraries" "${packages[@]}"
    mkdir -p "$(dirname "$out")"
    tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner -czf "$out" .
    dsv3_log "wrote $out: $(du -h "$out" | cut -f1), $(du -sh "$stage" | cut -f1) unpacked"
}

main "$@"
