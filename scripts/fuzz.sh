#!/usr/bin/env bash
# Coverage-guided fuzzing of the PyTorch-file reader (src/torchfile: pickle
# machine, zip and legacy containers, tensor layout checks, state-dict view)
# with AFL++ on the stable toolchain. The fuzz crate (fuzz/) is not part of the
# main build or CI.
#
# usage: scripts/fuzz.sh [SECONDS]    (default 600; findings in fuzz/out/)
# needs: cargo install cargo-afl && cargo afl config --build
#
# Seeds: fuzz/seeds/torchfile (scripts/fuzz-seeds.py writes them). A second
# run resumes from fuzz/out. Exits 1 when AFL++ saved a crash; reproduce one
# with `fuzz/target/release/torchfile < fuzz/out/default/crashes/id:...`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}

if ! cargo afl --version >/dev/null 2>&1; then
    echo "cargo-afl is missing: cargo install cargo-afl && cargo afl config --build" >&2
    exit 1
fi
cargo afl build --release

# No CPU frequency governor and core dumps to a handler are normal on servers and in containers.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
input=seeds/torchfile
if [ -d out/default/queue ]; then
    input=- # resume
fi
# -m: the target's address-space limit (MB): a failed allocation aborts, which
# AFL++ saves as a crash. -t: per-input timeout (ms).
cargo afl fuzz -i "$input" -o out -m 1024 -t 1000 -V "$secs" target/release/torchfile \
    >fuzz.log 2>&1 || { tail -30 fuzz.log >&2; exit 1; }

stats=out/default/fuzzer_stats
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs|stability)' "$stats"
# Crash files on disk (a resumed run's counters may include fixed ones moved away).
crashes=$(find out/default/crashes -name 'id:*' 2>/dev/null | wc -l)
echo "crash files     : $crashes"
if [ "$crashes" != 0 ]; then
    echo "crashes saved in fuzz/out/default/crashes; fix each with a regression test, then move them away" >&2
    exit 1
fi
