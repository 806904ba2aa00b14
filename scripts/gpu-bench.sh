#!/usr/bin/env bash
# Runs on the GPU machine (no cargo, no network): the carried CUDA binary's
# selftest on both fixtures, then our bench and the PyTorch peer on SD1.5-sized
# random weights at 512 px, in the same run. Results go to $OUT.
#
# Carry: dist/dreamartist-cuda.gz (scripts/build-cuda.sh), and .whl/ with the
# diffusers wheel (the machine's Python has torch and transformers, not diffusers):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl diffusers
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
bin=dist/dreamartist-cuda
if [ ! -x "$bin" ] && [ -f dist/dreamartist-cuda.gz ]; then
    bin=/tmp/dreamartist-cuda
    gzip -dc dist/dreamartist-cuda.gz > "$bin" && chmod +x "$bin"
fi
dtype="${DTYPE:-f16}"

# The CUDA 13 user-space libraries come with the machine's PyTorch.
py=$(command -v python3)
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$site"/nvidia/*/lib "$site"/nvidia/*/*/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH
if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
for fx in tiny-sd1 tiny-sd2v; do
    for dt in f32 f16 bf16; do
        timeout 300 "$bin" selftest "tests/fixtures/$fx" --device cuda --dtype "$dt" > "$OUT/selftest-$fx-$dt.txt" 2>&1
        echo "selftest $fx $dt: exit $? ($(tail -1 "$OUT/selftest-$fx-$dt.txt"))"
    done
done
timeout 300 "$bin" bench --sd15-random --size 512 --steps 20 --train-iters 10 --device cuda --dtype "$dtype" --json \
    > "$OUT/ours.json" 2> "$OUT/ours.err"
echo "ours: $(cat "$OUT/ours.json")"
timeout 300 "$py" scripts/peer_bench.py --sd15 --size 512 --steps 20 --train-iters 10 --device cuda --dtype "$dtype" \
    > "$OUT/peer.json" 2> "$OUT/peer.err"
echo "peer: $(tail -1 "$OUT/peer.json")"
