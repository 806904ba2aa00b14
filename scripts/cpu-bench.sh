#!/usr/bin/env bash
# Ours and the PyTorch + diffusers peer, back to back on this machine's CPU, on
# the tiny SD1 fixture at 64 px; prints both JSON lines and the ratios ours/peer.
# The peer needs `pip install torch diffusers transformers` (PEER_PYTHON picks the
# interpreter, e.g. a venv's).
#   MODEL=sd15 SIZE=256 STEPS=5 ITERS=3 scripts/cpu-bench.sh   # SD 1.5 sizes, random weights
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PEER_PYTHON:-python3}"
args=(--size "${SIZE:-64}" --steps "${STEPS:-20}" --train-iters "${ITERS:-20}")
if [ "${MODEL:-tiny}" = sd15 ]; then
    ours_model=(--sd15-random) peer_model=(--sd15)
else
    ours_model=(--model tests/fixtures/tiny-sd1/model) peer_model=("${ours_model[@]}")
fi
cargo build --release -q
ours=$(target/release/dreamartist bench "${ours_model[@]}" "${args[@]}" --json)
peer=$("$py" scripts/peer_bench.py "${peer_model[@]}" "${args[@]}" 2>/dev/null | tail -1)
echo "ours: $ours"
echo "peer: $peer"
python3 - "$ours" "$peer" <<'PY'
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ("train_step_ms", "sample_step_ms", "sample_total_ms", "peak_mem_mib"):
    print(f"{k:16} ours {o[k]:>9} peer {p[k]:>9} ratio {o[k] / p[k]:.2f}")
PY
