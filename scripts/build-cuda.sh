#!/usr/bin/env bash
# Builds `dreamartist` with the CUDA feature on a machine without a CUDA
# toolkit, from NVIDIA's PyPI wheels (nvcc, runtime headers, cuBLAS, cuRAND,
# NVRTC). The driver library libcuda.so is not among them: candle's cudarc
# loads it at run time, so only a link-time stub is provided here.
#
#   scripts/build-cuda.sh            # → dist/dreamartist-cuda
#   CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh   (H100/H200; the default)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CUDA_VENV:-$PWD/target/cuda-venv}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade \
    "nvidia-cuda-nvcc>=13,<14" "nvidia-cuda-crt>=13,<14" "nvidia-cuda-runtime>=13,<14" \
    "nvidia-cublas>=13,<14" "nvidia-curand>=10,<11" "nvidia-cuda-nvrtc>=13,<14"

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
# A stub libcuda.so with the right soname, for the link step only.
if [ ! -e "$toolkit/lib64/libcuda.so" ]; then
    echo 'void cuInit(void){}' > "$toolkit/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/lib64/libcuda.so" "$toolkit/cuda_stub.c"
fi
export CUDA_ROOT="$toolkit" CUDA_PATH="$toolkit" CUDA_TOOLKIT_ROOT_DIR="$toolkit"
export PATH="$toolkit/bin:$PATH"
export LIBRARY_PATH="$toolkit/lib64:${LIBRARY_PATH:-}"
nvcc --version | tail -1
cargo build --release --features cuda
mkdir -p dist
cp target/release/dreamartist dist/dreamartist-cuda
echo "built dist/dreamartist-cuda"
