#!/usr/bin/env bash
# Where a training step (or a sampling step) spends its CPU time: `perf record`
# around the timed phase of `dreamartist bench` only (model building and
# warm-up left out), then the samples grouped by what the code does.
#   SIZE=256 ITERS=4 scripts/cpu-profile.sh            # SD 1.5 sizes, training
#   PHASE=sample SIZE=384 scripts/cpu-profile.sh        # the sampling loop
#   MODEL=tiny SIZE=64 ITERS=40 scripts/cpu-profile.sh  # the tiny fixture
# Needs `perf` (Debian: linux-perf) and permission to profile
# (kernel.perf_event_paranoid ≤ 2 for your own processes). Writes
# target/profile/<phase>-<size>.{data,txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
phase=${PHASE:-train} size=${SIZE:-256}
if [ "${MODEL:-sd15}" = tiny ]; then
    model=(--model tests/fixtures/tiny-sd1/model)
else
    model=(--sd15-random)
fi
cargo build --release -q
out=target/profile; mkdir -p "$out"
data="$out/$phase-$size.data" report="$out/$phase-$size.txt"
fifo=$(mktemp -u); mkfifo "$fifo"; trap 'rm -f "$fifo"' EXIT
DREAMARTIST_PERF_CTL="$fifo" DREAMARTIST_PERF_PHASE="$phase" \
    perf record -q -F "${FREQ:-499}" -D -1 --control "fifo:$fifo" -o "$data" -- \
    target/release/dreamartist bench "${model[@]}" --size "$size" \
    --steps "${STEPS:-3}" --train-iters "${ITERS:-4}" --json | tail -1
perf report -i "$data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' > "$report.symbols"
python3 - "$report.symbols" <<'PY' | tee "$report"
import re, sys
groups = [
    ("gemm main kernel (x4x6)", r"microkernel.*x4x6"),
    ("gemm edge kernels", r"microkernel"),
    ("gemm packing", r"gemm_common|vectorize"),
    ("kernel: page faults, zeroing", r"\[kernel|\[k\]"),
    ("memset (zero fills)", r"memset"),
    ("memcpy (copies, cat, contiguous)", r"memmove|memcpy|copy_strided|copy2d"),
    ("candle elementwise (add/mul/affine…)", r"binary_map|unary_map|affine|candle_core"),
    ("fused norms", r"NormGeometry|group_norm|layer_norm"),
    ("fused softmax", r"softmax"),
    ("fused GEGLU / gelu / erf", r"geglu|gelu|erf"),
    ("im2col / col2im", r"PatchOp"),
    ("libm (exp…)", r"libm|exp"),
    ("allocator", r"malloc|free|_int_"),
]
totals = {name: 0.0 for name, _ in groups}
other = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    key = f"[k] {sym}" if "kernel" in dso else f"{dso} {sym}"
    for name, pat in groups:
        if re.search(pat, key):
            totals[name] += pct
            break
    else:
        other.append((pct, key))
print(f"{'share':>7}  what")
for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"{pct:6.1f}%  {name}")
rest = sum(p for p, _ in other)
print(f"{rest:6.1f}%  other; largest:")
for pct, key in sorted(other, reverse=True)[:8]:
    print(f"         {pct:5.2f}%  {key[:90]}")
PY
echo "symbols: $report.symbols; samples: $data (perf report -i $data)"
