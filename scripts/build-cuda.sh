#!/usr/bin/env bash
# Builds `dreamartist` with the CUDA feature on a machine without a CUDA
# toolkit, from NVIDIA's PyPI wheels (nvcc, runtime headers, cuBLAS, cuRAND,
# NVRTC). The driver library libcuda.so is not among them: candle's cudarc
# loads it at run time, so only a link-time stub is provided here.
#
#   scripts/build-cuda.sh            # → dist/dreamartist-cuda (+ .gz to carry)
#   CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh   (only H100/H200)
#
# Compute capability: this machine's GPU when it has one (nvidia-smi), else 80.
# candle ships its kernels as PTX, which the driver compiles for the GPU it
# runs on, so PTX for 8.0 runs on every GPU from the A100 on (8.0, 8.6 RTX 30xx
# / A10, 8.9 RTX 40xx / L4, 9.0 H100/H200); PTX for 9.0 would run on Hopper only.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CUDA_VENV:-$PWD/target/cuda-venv}"
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.' || true)
    CUDA_COMPUTE_CAP="${cap:-80}"
fi
export CUDA_COMPUTE_CAP
echo "building CUDA kernels for compute capability $CUDA_COMPUTE_CAP"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# CUDA 13.0, the version of the GPU machines' driver (580): candle's kernels are
# shipped as PTX, and a driver refuses PTX from a newer nvcc; cudarc 0.19 also
# knows toolkits only up to 13.4. CUDA_WHEELS picks another release (e.g. 13.4).
ver="${CUDA_WHEELS:-13.0}"
"$venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==$ver.*" "nvidia-cuda-crt==$ver.*" "nvidia-cuda-runtime==$ver.*" \
    "nvidia-cublas==$ver.*" "nvidia-cuda-nvrtc==$ver.*" "nvidia-cuda-cccl==$ver.*" \
    "nvidia-nvvm==$ver.*" \
    "nvidia-curand>=10,<11"

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
root="$site/nvidia/cu13"
[ -d "$root" ] || root="$site/nvidia/cuda_nvcc"
# Lay the wheels out like a toolkit: bin/nvcc, include/, lib64/.
toolkit="$PWD/target/cuda-toolkit"
rm -rf "$toolkit" && mkdir -p "$toolkit/bin" "$toolkit/include" "$toolkit/lib64"
for d in "$site"/nvidia/*/ "$site"/nvidia/*/*/; do
    [ -d "$d/bin" ] && cp -rsf "$d/bin/." "$toolkit/bin/" 2>/dev/null || true
    [ -d "$d/include" ] && cp -rsf "$d/include/." "$toolkit/include/" 2>/dev/null || true
    [ -d "$d/lib" ] && cp -rsf "$d/lib/." "$toolkit/lib64/" 2>/dev/null || true
    [ -d "$d/nvvm" ] && cp -rsf "$d/nvvm" "$toolkit/" 2>/dev/null || true
done
# Unversioned names the linker looks for.
for lib in cublas cublasLt curand nvrtc cudart; do
    f=$(ls "$toolkit/lib64"/lib$lib.so.* 2>/dev/null | head -1 || true)
    [ -n "$f" ] && ln -sf "$(basename "$f")" "$toolkit/lib64/lib$lib.so"
done
# A stub libcuda.so with the right soname, for the link step only: one empty
# function per driver API entry point (names after the headers' `_v2` macros).
# At run time the driver's own libcuda.so.1 is loaded instead.
if [ ! -e "$toolkit/lib64/libcuda.so" ]; then
    # (The wheels have no cudaProfiler.h: its three entry points are listed by hand.)
    { gcc -E -P -I "$toolkit/include" "$toolkit/include/cuda.h" \
        | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | sed 's/[[:space:]]*($//'
      printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop
    } | sort -u | sed 's/.*/void &(void) {}/' > "$toolkit/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/lib64/libcuda.so" "$toolkit/cuda_stub.c"
fi
export CUDA_ROOT="$toolkit" CUDA_PATH="$toolkit" CUDA_TOOLKIT_ROOT_DIR="$toolkit"
export PATH="$toolkit/bin:$PATH"
export LIBRARY_PATH="$toolkit/lib64:${LIBRARY_PATH:-}"
nvcc --version | tail -1
# Its own target folder: the CPU build in target/release stays as it is.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda-build}"
cargo build --release --features cuda
mkdir -p dist
# Stripped and compressed for carrying to the GPU machine (candle's PTX kernels
# make the binary ~63 MiB; gzip brings it to ~17 MiB, xz lower still). Only the
# compressed file is carried: `carry: ["dist"]` after removing the plain one,
# or scripts/gpu-slim.sh's size check counts it too.
strip -o dist/dreamartist-cuda "$CARGO_TARGET_DIR/release/dreamartist"
if command -v xz >/dev/null; then
    xz -9e -T0 -c dist/dreamartist-cuda > dist/dreamartist-cuda.xz
else
    gzip -9 -c dist/dreamartist-cuda > dist/dreamartist-cuda.gz
fi
rm dist/dreamartist-cuda
ls -la dist/
