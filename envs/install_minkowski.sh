#!/usr/bin/env bash
# Build and install MinkowskiEngine 0.5.4 into the *current* Python environment.
#
#   bash envs/install_minkowski.sh            # auto: CUDA build if possible, else CPU
#   ME_CPU_ONLY=1 bash envs/install_minkowski.sh   # force the CPU-only build
#   ME_CPU_ONLY=0 bash envs/install_minkowski.sh   # require the CUDA build (fail otherwise)
#
# Why a script: the last MinkowskiEngine release (0.5.4, 2021) does not import
# on Python >= 3.10 / torch >= 2.0 as published, and PyPI only has an sdist.
# This script downloads that sdist, applies small source patches, builds a
# wheel against the torch that is already installed, and installs the wheel
# with --no-deps, so it can never replace (or pull in another) torch.
#
# Patches applied to the unpacked sdist (all in a temp dir, never by hand):
#   1. `from collections import Sequence` -> `collections.abc` (5 files; the
#      alias was removed in Python 3.10).
#   2. MinkowskiEngine/utils/gradcheck.py: drop the `torch._six` import (module
#      removed in torch 2.0). The file also imports private helpers from
#      torch.autograd.gradcheck that current torch no longer has, so it is
#      replaced by a thin wrapper around torch.autograd.gradcheck with the same
#      signature (only ME's own unit tests use it; `import MinkowskiEngine`
#      never does).
#   3. setup.py: drop its `pip uninstall MinkowskiEngine -y` side effect (it runs
#      whatever `pip` is first on PATH, every time setup.py is executed).
#   4. CUDA sources only (no effect on the CPU build): explicit thrust includes
#      that newer CUDA toolkits (>= 12) no longer pull in transitively, and
#      NVTX ranges disabled (the bundled cuDF nvtx3 copy collides with the
#      toolkit's). Not verified on a GPU build from this script yet.
#
# Environment knobs (all optional):
#   PYTHON          interpreter to install into (default: python, else python3)
#   ME_CPU_ONLY     1 = CPU-only build, 0 = CUDA build required, unset = auto
#                   (CUDA when torch.version.cuda is set AND nvcc is found)
#   ME_WHEEL_DIR    wheel cache (default: $HOME/.cache/lgseg/wheels); a wheel
#                   built earlier for the same python/torch/variant is reused
#   ME_REBUILD=1    ignore a cached wheel and build again
#   ME_SDIST        path to a local MinkowskiEngine-0.5.4.tar.gz (offline use)
#   MAX_JOBS        parallel compile jobs (default: number of cores)
#   CUDA_HOME       CUDA toolkit root (default: derived from nvcc)
#   TORCH_CUDA_ARCH_LIST  e.g. "8.0;9.0" - GPU archs to compile for. Without it
#                   torch compiles for the GPUs it can see; set it on a build
#                   node without a GPU.
#   ME_KEEP_BUILD=1 keep the temporary build directory (for debugging)
#
# Requirements: torch already installed in the environment; a C++ compiler;
# OpenBLAS headers + library (Debian/Ubuntu: libopenblas-dev, installed here
# automatically when running as root; conda: the `openblas` package).
set -euo pipefail

ME_VERSION="0.5.4"
ME_SDIST_NAME="MinkowskiEngine-${ME_VERSION}.tar.gz"
# sha256 of the PyPI sdist (files on PyPI are immutable).
ME_SDIST_SHA256="b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94"
# Bump when the patch set below changes, so stale cached wheels are not reused.
ME_PATCH_REV="1"

log() { printf '[install_minkowski] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --------------------------------------------------------------------------
# 0. Interpreter
# --------------------------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' found (set PYTHON=...)"

# --------------------------------------------------------------------------
# 1. torch must already be importable; ME is compiled against exactly this one.
# --------------------------------------------------------------------------
if ! torch_info="$("$PYTHON" -c '
import sys, torch
print(torch.__version__)
print(torch.version.cuda or "")
print("%d.%d" % sys.version_info[:2])
print(sys.executable)
' 2>/dev/null)"; then
    die "cannot 'import torch' with $PYTHON. Install PyTorch first (CPU or CUDA build), e.g. 'pip install torch', then re-run."
fi
{ read -r TORCH_VERSION; read -r TORCH_CUDA; read -r PY_VERSION; read -r PY_EXE; } <<<"$torch_info"
PYTHON="$PY_EXE"   # absolute path from here on (the final check runs from /)
log "python: $PY_EXE ($PY_VERSION)"
log "torch:  $TORCH_VERSION (torch.version.cuda: ${TORCH_CUDA:-none})"

"$PYTHON" -c 'import numpy' 2>/dev/null \
    || die "numpy is not importable; MinkowskiEngine needs it (pip install 'numpy>=1.24')."

# --------------------------------------------------------------------------
# 2. CPU-only or CUDA build?
# --------------------------------------------------------------------------
find_nvcc() {
    local cand
    for cand in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "${CUDA_PATH:+$CUDA_PATH/bin/nvcc}" \
                "$(command -v nvcc 2>/dev/null || true)" /usr/local/cuda/bin/nvcc; do
        if [[ -n "$cand" && -x "$cand" ]]; then printf '%s\n' "$cand"; return 0; fi
    done
    return 1
}

NVCC="$(find_nvcc || true)"
NVCC_VERSION=""
if [[ -n "$NVCC" ]]; then
    NVCC_VERSION="$("$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p' | head -n1)"
fi

case "${ME_CPU_ONLY:-}" in
    1|true|yes) VARIANT=cpu; why="ME_CPU_ONLY=${ME_CPU_ONLY}" ;;
    0|false|no)
        [[ -n "$TORCH_CUDA" ]] || die "ME_CPU_ONLY=0 but this torch ($TORCH_VERSION) has no CUDA support."
        [[ -n "$NVCC" ]] || die "ME_CPU_ONLY=0 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)."
        VARIANT=cuda; why="ME_CPU_ONLY=0" ;;
    "")
        if [[ -n "$TORCH_CUDA" && -n "$NVCC" ]]; then
            VARIANT=cuda; why="torch has CUDA $TORCH_CUDA and nvcc $NVCC_VERSION found at $NVCC"
        elif [[ -n "$TORCH_CUDA" ]]; then
            VARIANT=cpu; why="torch has CUDA $TORCH_CUDA but no nvcc was found"
        else
            VARIANT=cpu; why="torch is a CPU-only build"
        fi ;;
    *) die "ME_CPU_ONLY must be 1, 0 or unset (got '${ME_CPU_ONLY}')" ;;
esac
log "build variant: $VARIANT ($why)"

SETUP_FLAGS=(--blas=openblas)
if [[ "$VARIANT" == cuda ]]; then
    # setup.py itself only builds CUDA when torch.cuda.is_available(); force it
    # so a wheel can be built on a node without a GPU.
    SETUP_FLAGS+=(--force_cuda)
    if [[ -z "${CUDA_HOME:-}" ]]; then
        # nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc); ask nvcc itself
        # where it lives instead of trusting dirname(dirname(which nvcc)).
        probe_dir="$(mktemp -d)"
        : >"$probe_dir/probe.cu"
        nvcc_bin="$("$NVCC" --dryrun -c "$probe_dir/probe.cu" -o "$probe_dir/probe.o" 2>&1 \
                    | sed -n 's/^#\$ _HERE_=//p' | head -n1 || true)"
        rm -rf "$probe_dir"
        [[ -n "$nvcc_bin" ]] || nvcc_bin="$(dirname "$(readlink -f "$NVCC")")"
        CUDA_HOME="$(cd "$nvcc_bin/.." && pwd)"
        export CUDA_HOME
    fi
    log "CUDA_HOME=$CUDA_HOME, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<unset: archs of visible GPUs>}"
    if [[ -n "$NVCC_VERSION" && "${NVCC_VERSION%%.*}" != "${TORCH_CUDA%%.*}" ]]; then
        die "nvcc is CUDA $NVCC_VERSION but torch was built with CUDA $TORCH_CUDA; the major versions must match (install the matching toolkit, or ME_CPU_ONLY=1)."
    fi
else
    SETUP_FLAGS+=(--cpu_only)
fi

# --------------------------------------------------------------------------
# 3. OpenBLAS: needed to build, and (libopenblas.so.0) to import the wheel,
#    so it is checked even when a cached wheel is reused.
# --------------------------------------------------------------------------
have_openblas() {
    # conda env: headers and library live in $CONDA_PREFIX
    if [[ -n "${CONDA_PREFIX:-}" && -e "$CONDA_PREFIX/lib/libopenblas.so" \
          && -e "$CONDA_PREFIX/include/cblas.h" ]]; then
        return 0
    fi
    # Debian/Ubuntu
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' libopenblas-dev 2>/dev/null | grep -q 'install ok installed'
        return
    fi
    # anything else: a linkable libopenblas.so known to the loader
    ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so '
}

if ! have_openblas; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing libopenblas-dev with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas-dev
    else
        die "OpenBLAS development files not found. Install them, then re-run:
  Debian/Ubuntu: sudo apt-get install libopenblas-dev
  Fedora/RHEL:   sudo dnf install openblas-devel
  conda env:     conda install -c conda-forge openblas"
    fi
fi

if [[ -n "${CONDA_PREFIX:-}" && -e "$CONDA_PREFIX/lib/libopenblas.so" ]]; then
    # setup.py's own --blas_library_dirs handling is broken (it renders a
    # Python list into the rpath), so point the compiler at conda's
    # OpenBLAS through the standard gcc/ld environment variables instead.
    log "using OpenBLAS from $CONDA_PREFIX"
    export CPATH="$CONDA_PREFIX/include${CPATH:+:$CPATH}"
    export LIBRARY_PATH="$CONDA_PREFIX/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LDFLAGS="${LDFLAGS:+$LDFLAGS }-Wl,-rpath,$CONDA_PREFIX/lib"
fi

# --------------------------------------------------------------------------
# 4. Wheel cache: one wheel per (ME, patch rev, python, torch, variant).
#    The wheel file name alone (minkowskiengine-0.5.4-cp311-...whl; newer
#    setuptools lower-case it) does not say which torch/CUDA it was built
#    for, so the directory name does. Only this one wheel lives in there.
# --------------------------------------------------------------------------
ME_WHEEL_DIR="${ME_WHEEL_DIR:-$HOME/.cache/lgseg/wheels}"
cache_key="MinkowskiEngine-${ME_VERSION}-p${ME_PATCH_REV}-py${PY_VERSION}-torch${TORCH_VERSION}-${VARIANT}"
if [[ "$VARIANT" == cuda ]]; then
    arch_tag="$(printf '%s' "${TORCH_CUDA_ARCH_LIST:-native}" | tr -c 'A-Za-z0-9.+' '_')"
    cache_key+="${NVCC_VERSION}-arch${arch_tag}"
fi
CACHE_DIR="$ME_WHEEL_DIR/$cache_key"
mkdir -p "$CACHE_DIR"

shopt -s nullglob
cached=("$CACHE_DIR"/*.whl)
shopt -u nullglob
if [[ "${ME_REBUILD:-0}" == 1 ]]; then
    cached=()
fi

if (( ${#cached[@]} > 0 )); then
    WHEEL="${cached[0]}"
    log "reusing cached wheel: $WHEEL"
else
    # ----------------------------------------------------------------------
    # 5. Build prerequisites: C++ compiler, ninja.
    # ----------------------------------------------------------------------
    command -v "${CXX:-c++}" >/dev/null 2>&1 \
        || die "no C++ compiler ('${CXX:-c++}') found; install one (Debian/Ubuntu: apt-get install g++)."

    if ! command -v ninja >/dev/null 2>&1; then
        # torch's BuildExtension compiles files in parallel only with ninja.
        log "ninja not found; installing the 'ninja' package with pip (build tool only)"
        "$PYTHON" -m pip install --no-deps ninja \
            || log "WARNING: could not install ninja; the build falls back to a slow serial compile"
    fi

    # ----------------------------------------------------------------------
    # 6. Source: the PyPI sdist, checked against its pinned sha256.
    # ----------------------------------------------------------------------
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/me_build.XXXXXX")"
    if [[ "${ME_KEEP_BUILD:-0}" == 1 ]]; then
        log "keeping build directory $WORK"
    else
        trap 'rm -rf "$WORK"' EXIT
    fi

    SDIST_CACHE="$ME_WHEEL_DIR/sdist"
    mkdir -p "$SDIST_CACHE"
    if [[ -n "${ME_SDIST:-}" ]]; then
        SDIST="$ME_SDIST"
    else
        SDIST="$SDIST_CACHE/$ME_SDIST_NAME"
    fi

    sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$ME_SDIST_SHA256" ]]; }

    if ! sha_ok "$SDIST"; then
        [[ -z "${ME_SDIST:-}" ]] || die "$ME_SDIST is missing or is not the PyPI $ME_SDIST_NAME (sha256 mismatch)."
        log "downloading $ME_SDIST_NAME from the package index"
        # Fetch the file straight from the index's simple (PEP 503) page. This
        # deliberately does not use `pip download`: for an sdist pip runs
        # setup.py to read its metadata, and this setup.py uninstalls any
        # installed MinkowskiEngine and needs BLAS settings that pip download
        # cannot pass to it.
        index_url="${PIP_INDEX_URL:-$("$PYTHON" -m pip config get global.index-url 2>/dev/null || true)}"
        index_url="${index_url:-https://pypi.org/simple}"
        "$PYTHON" - "$index_url" "$ME_SDIST_NAME" "$WORK/$ME_SDIST_NAME" <<'PY'
import re, sys, urllib.parse, urllib.request
index, name, dest = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
page = index + "/minkowskiengine/"
req = urllib.request.Request(page, headers={"Accept": "text/html", "User-Agent": "lgseg-install-minkowski"})
html = urllib.request.urlopen(req, timeout=120).read().decode("utf-8", "replace")
for href in re.findall(r'href="([^"]+)"', html):
    url = urllib.parse.urljoin(page, href.replace("&amp;", "&"))
    if urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1] == name:
        with urllib.request.urlopen(url.split("#", 1)[0], timeout=300) as r, open(dest, "wb") as f:
            f.write(r.read())
        break
else:
    sys.exit(f"{name} not listed on {page}")
PY
        sha_ok "$WORK/$ME_SDIST_NAME" || die "downloaded $ME_SDIST_NAME does not match the pinned sha256"
        mv "$WORK/$ME_SDIST_NAME" "$SDIST_CACHE/$ME_SDIST_NAME"
        SDIST="$SDIST_CACHE/$ME_SDIST_NAME"
    fi
    log "sdist: $SDIST (sha256 ok)"

    tar -xzf "$SDIST" -C "$WORK"
    SRC="$WORK/MinkowskiEngine-$ME_VERSION"
    [[ -f "$SRC/setup.py" ]] || die "unexpected sdist layout: no $SRC/setup.py"

    # ----------------------------------------------------------------------
    # 7. Patches (exact-text edits; each must apply, or the script stops).
    # ----------------------------------------------------------------------
    log "patching sources"
    "$PYTHON" - "$SRC" <<'PY'
import pathlib, sys

src = pathlib.Path(sys.argv[1])

def edit(rel, old, new, count=1):
    path = src / rel
    text = path.read_text()
    found = text.count(old)
    if found != count:
        sys.exit(f"patch failed: expected {count} x {old!r} in {rel}, found {found}")
    path.write_text(text.replace(old, new))
    print(f"  patched {rel}")

# 1. collections.Sequence was removed in Python 3.10.
for rel in ("MinkowskiEngine/MinkowskiCommon.py",
            "MinkowskiEngine/MinkowskiCoordinateManager.py",
            "MinkowskiEngine/MinkowskiTensorField.py",
            "MinkowskiEngine/utils/quantization.py"):
    edit(rel, "from collections import Sequence\n", "from collections.abc import Sequence\n")
edit("MinkowskiEngine/MinkowskiKernelGenerator.py",
     "from collections import Sequence, namedtuple\n",
     "from collections import namedtuple\nfrom collections.abc import Sequence\n")

# 2. torch._six is gone (torch 2.0), and so are the private
#    torch.autograd.gradcheck helpers this module imported. Keep the public
#    function and its signature; delegate to torch.autograd.gradcheck.
gc = src / "MinkowskiEngine/utils/gradcheck.py"
if "from torch._six import" not in gc.read_text():
    sys.exit("patch failed: gradcheck.py no longer imports torch._six (sdist changed?)")
gc.write_text('''\
# Rewritten by lgseg's envs/install_minkowski.sh: MinkowskiEngine 0.5.4 shipped
# a copy of an old torch gradcheck that imports torch._six and private
# torch.autograd.gradcheck helpers, none of which exist in current torch.
import torch


def gradcheck(
    func,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    check_sparse_nnz: bool = False,  # accepted for compatibility, unused
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
) -> bool:
    """Gradient check of an autograd.Function (or callable) on ``inputs``."""
    fn = func.apply if hasattr(func, "apply") else func
    return torch.autograd.gradcheck(
        fn,
        inputs,
        eps=eps,
        atol=atol,
        rtol=rtol,
        raise_exception=raise_exception,
        nondet_tol=nondet_tol,
        check_undefined_grad=check_undefined_grad,
        check_grad_dtypes=check_grad_dtypes,
    )
''')
print("  rewrote MinkowskiEngine/utils/gradcheck.py")

# 3. No `pip uninstall` from inside setup.py (this script installs the wheel
#    with --force-reinstall, which replaces an older copy anyway).
edit("setup.py",
     'run_command("pip", "uninstall", "MinkowskiEngine", "-y")\n',
     '# (lgseg) removed: run_command("pip", "uninstall", "MinkowskiEngine", "-y")\n')

# 4. CUDA-only sources (not compiled by the CPU build).
edit("src/3rdparty/concurrent_unordered_map.cuh",
     "#include <thrust/count.h>\n",
     "#include <thrust/count.h>\n#include <thrust/execution_policy.h>\n")
edit("src/coordinate_map_gpu.cu",
     "#include <thrust/sort.h>\n",
     "#include <thrust/sort.h>\n#include <thrust/remove.h>\n#include <thrust/unique.h>\n")
edit("setup.py",
     'NVCC_FLAGS += ["--expt-relaxed-constexpr", "--expt-extended-lambda"]\n',
     'NVCC_FLAGS += ["--expt-relaxed-constexpr", "--expt-extended-lambda", "-DNVTX_DISABLE"]\n')
PY

    # ----------------------------------------------------------------------
    # 8. Build the wheel.
    #    * --no-build-isolation: compile against the torch installed here.
    #    * --no-deps: never let pip fetch/build torch or numpy.
    #    * SETUPTOOLS_USE_DISTUTILS=stdlib (Python < 3.12): this 2021 setup.py
    #      (and its numpy.distutils BLAS probe) predates setuptools' bundled
    #      distutils; with current setuptools it fails without the stdlib one.
    #    * setup.py reads its own flags (--blas, --cpu_only, --force_cuda) from
    #      sys.argv; through pip they go in as setuptools' --global-option,
    #      which setuptools puts on the setup.py command line of every hook.
    # ----------------------------------------------------------------------
    export MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN || echo 2)}"
    if "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
        export SETUPTOOLS_USE_DISTUTILS=local   # no stdlib distutils on 3.12+
    else
        export SETUPTOOLS_USE_DISTUTILS=stdlib
    fi
    # One space-separated value: setuptools splits it, and older pips keep
    # only the last of repeated -C keys.
    config_settings=(--config-settings="--global-option=${SETUP_FLAGS[*]}")

    log "building wheel: setup.py flags '${SETUP_FLAGS[*]}', MAX_JOBS=$MAX_JOBS (a CPU build takes several minutes; CUDA much longer)"
    start=$SECONDS
    mkdir -p "$WORK/dist"
    "$PYTHON" -m pip wheel --no-build-isolation --no-deps --no-cache-dir \
        "${config_settings[@]}" -w "$WORK/dist" "$SRC"
    log "wheel built in $((SECONDS - start)) s"

    shopt -s nullglob
    built=("$WORK"/dist/*.whl)
    shopt -u nullglob
    (( ${#built[@]} == 1 )) || die "expected one wheel in $WORK/dist, found ${#built[@]}"
    # copy, then rename: a half-written file must never look like a cached wheel
    rm -f "$CACHE_DIR"/*.whl
    WHEEL="$CACHE_DIR/$(basename "${built[0]}")"
    cp "${built[0]}" "$WHEEL.part"
    mv "$WHEEL.part" "$WHEEL"
    log "cached wheel: $WHEEL"
fi

# --------------------------------------------------------------------------
# 9. Install the wheel (never touching torch) and verify.
# --------------------------------------------------------------------------
"$PYTHON" -m pip install --no-deps --force-reinstall "$WHEEL"

after="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
[[ "$after" == "$TORCH_VERSION" ]] || die "torch changed from $TORCH_VERSION to $after during the install!"

# Run the check outside the source tree so the installed package is imported.
(cd / && "$PYTHON" -c "import MinkowskiEngine as ME; print(ME.__version__)") \
    || die "MinkowskiEngine was installed but does not import"
log "done: MinkowskiEngine $ME_VERSION ($VARIANT) installed for torch $TORCH_VERSION"
