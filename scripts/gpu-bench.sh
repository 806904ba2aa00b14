#!/usr/bin/env bash
# The GPU check, one unattended command on the GPU machine (no cargo, no
# network), inside its limits: 10 minutes a command, at most 8 files back.
#   1. selftest of the carried CUDA binary on the three fixtures in f32, f16, bf16;
#   2. ours vs the PyTorch + diffusers peer, SD 1.5 sizes at 512 px, then SDXL
#      sizes at 1024 px (random weights), same run, same dtype.
# Every step has its own timeout, cut to what is left of the whole run's
# budget (GPU_BUDGET_S, default 540 s); a step with under 20 s left is recorded
# as skipped.
# Results: $OUT/summary.json (rewritten after every step, so a killed run
# still leaves what it finished) and $OUT/log.txt (every step's output).
#
# Prepare here (scripts/gpu-slim.sh explains the whole procedure):
#   scripts/build-cuda.sh                  # → dist/dreamartist-cuda.xz (or .gz)
#   the diffusers wheel in .whl/ (the machine's Python has torch and transformers):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl diffusers
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
log="$OUT/log.txt"
results="$OUT/.results.jsonl"
: > "$log"
: > "$results"
start=$(date +%s)
budget="${GPU_BUDGET_S:-540}"
dtype="${DTYPE:-f16}"

bin=dist/dreamartist-cuda
if [ ! -x "$bin" ]; then
    bin=/tmp/dreamartist-cuda
    if [ -f dist/dreamartist-cuda.xz ]; then
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            dist/dreamartist-cuda.xz "$bin"
    elif [ -f dist/dreamartist-cuda.gz ]; then
        gzip -dc dist/dreamartist-cuda.gz > "$bin"
    fi
    chmod +x "$bin" 2>/dev/null
fi

# The CUDA user-space libraries come with the machine's PyTorch.
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

# summary.json from the step records so far.
summarize() {
    "$py" - "$results" "$OUT/summary.json" "$(($(date +%s) - start))" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ratios = {}
for kind in ("sd15", "sdxl"):
    o = next((s["json"] for s in steps if s["name"] == f"bench-{kind}-ours" and s.get("json")), None)
    p = next((s["json"] for s in steps if s["name"] == f"bench-{kind}-peer" and s.get("json")), None)
    if o and p:
        ratios[kind] = {k: round(o[k] / p[k], 3) for k in ("train_step_ms", "sample_step_ms", "sample_total_ms", "peak_mem_mib") if p.get(k)}
json.dump({"elapsed_s": int(sys.argv[3]), "steps": steps, "ratios_ours_over_peer": ratios},
          open(sys.argv[2], "w"), indent=1)
PY
}

# step NAME TIMEOUT CMD...: runs CMD with its output in the log; records exit
# status, seconds, the last line, and a JSON object if the last line is one.
step() {
    local name=$1 limit=$2
    shift 2
    local now=$(($(date +%s) - start))
    # A step gets its own limit, or what is left of the budget if less.
    local left=$((budget - now))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "{\"name\": \"$name\", \"status\": \"skipped\", \"reason\": \"budget: ${now}s of ${budget}s used\"}" >> "$results"
        echo "== $name: skipped (budget)" | tee -a "$log"
        summarize
        return
    fi
    echo "== $name: $*" >> "$log"
    local t0=$(date +%s)
    local tmp=/tmp/gpu-step.out
    timeout "$limit" "$@" > "$tmp" 2>&1
    local rc=$?
    cat "$tmp" >> "$log"
    "$py" - "$name" "$rc" "$(($(date +%s) - t0))" "$tmp" >> "$results" <<'PY'
import json, sys
name, rc, secs, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = [l for l in open(path, errors="replace").read().splitlines() if l.strip()]
last = lines[-1] if lines else ""
rec = {"name": name, "exit": rc, "seconds": secs, "timed_out": rc == 124, "last_line": last[-400:]}
try:
    rec["json"] = json.loads(last)
except ValueError:
    pass
print(json.dumps(rec))
PY
    echo "== $name: exit $rc in $(($(date +%s) - t0)) s: $(tail -1 "$tmp" | cut -c1-200)" | tee -a "$log"
    summarize
}

nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv >> "$log" 2>&1
# The fixtures that travelled (scripts/gpu-slim.sh keeps tiny-sd1 and tiny-sd2v).
for fx in tiny-sd1 tiny-sd2v tiny-sdxl; do
    [ -f "tests/fixtures/$fx/goldens.safetensors" ] || continue
    for dt in f32 f16 bf16; do
        step "selftest-$fx-$dt" 90 "$bin" selftest "tests/fixtures/$fx" --device cuda --dtype "$dt"
    done
done
step bench-sd15-ours 200 "$bin" bench --sd15-random --size 512 --steps 20 --train-iters 10 \
    --device cuda --dtype "$dtype" --json
step bench-sd15-peer 200 "$py" scripts/peer_bench.py --sd15 --size 512 --steps 20 --train-iters 10 \
    --device cuda --dtype "$dtype"
step bench-sdxl-ours 200 "$bin" bench --sdxl-random --size 1024 --steps 10 --train-iters 5 \
    --device cuda --dtype "$dtype" --json
step bench-sdxl-peer 200 "$py" scripts/peer_bench.py --sdxl --size 1024 --steps 10 --train-iters 5 \
    --device cuda --dtype "$dtype"
rm -f "$results"
echo "summary: $OUT/summary.json"
