#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of hostile input with AFL++ on the
# stable toolchain. The fuzz crate (fuzz/) is not part of the main build or CI.
#
# usage: scripts/fuzz.sh [TARGET|all] [SECONDS]
#   TARGET: torchfile (the default), embedding, singlefile, toml, prompt, png;
#   all: each target in turn, SECONDS each. SECONDS defaults to 600.
#   scripts/fuzz.sh SECONDS (a number alone) fuzzes torchfile, as it always did.
# needs: cargo install cargo-afl && cargo afl config --build
#
# Seeds: fuzz/seeds/TARGET (scripts/fuzz-seeds.py writes them), dictionary:
# fuzz/dict/TARGET.dict when there is one. Findings go to fuzz/out/TARGET/
# (AFL++'s own layout: default/queue, default/crashes, default/hangs) with the
# log in fuzz/out/TARGET/fuzz.log; a second run resumes from there. Exits 1
# when a target saved a crash (hangs are counted and named, not failed on);
# reproduce one with
#   fuzz/target/release/TARGET < fuzz/out/TARGET/default/crashes/id:...
# (FUZZ_DEBUG=1 in front says what the input did).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

targets=(torchfile embedding singlefile toml prompt png)
target=torchfile
if [ $# -gt 0 ] && ! [[ $1 =~ ^[0-9]+$ ]]; then
    target=$1
    shift
fi
secs=${1:-600}
if [ "$target" = all ]; then
    selected=("${targets[@]}")
elif [[ " ${targets[*]} " == *" $target "* ]]; then
    selected=("$target")
else
    echo "unknown target \`$target\` (known: ${targets[*]}, all)" >&2
    exit 2
fi

if ! cargo afl --version >/dev/null 2>&1; then
    echo "cargo-afl is missing: cargo install cargo-afl && cargo afl config --build" >&2
    exit 1
fi
cargo afl build --release

# No CPU frequency governor and core dumps to a handler are normal on servers and in containers.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1

# Fuzzes one target for $secs seconds; prints its figures; returns 1 on findings.
fuzz_one() {
    local t=$1 out=out/$1 input=seeds/$1 dict=()
    mkdir -p "$out"
    # Before per-target folders, torchfile's findings were in out/default.
    if [ "$t" = torchfile ] && [ -d out/default ] && [ ! -d "$out/default" ]; then
        mv out/default "$out/default"
    fi
    if [ -d "$out/default/queue" ]; then
        input=- # resume
    fi
    if [ -f "dict/$t.dict" ]; then
        dict=(-x "dict/$t.dict")
    fi
    echo "== $t: ${secs}s"
    # -m: the target's address-space limit (MB): a failed allocation aborts,
    # which AFL++ saves as a crash. -t: per-input timeout (ms).
    local status=0
    cargo afl fuzz -i "$input" -o "$out" "${dict[@]}" -m 1024 -t 1000 -V "$secs" \
        "target/release/$t" >"$out/fuzz.log" 2>&1 || status=$?
    # What a target left in its scratch folder when AFL++ killed it.
    rm -rf /dev/shm/dreamartist-fuzz-"$t"-* "${TMPDIR:-/tmp}"/dreamartist-fuzz-"$t"-*
    if [ "$status" != 0 ]; then
        tail -30 "$out/fuzz.log" >&2
        return 1
    fi
    grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs|stability)' \
        "$out/default/fuzzer_stats"
    # Files on disk (a resumed run's counters may include fixed ones moved away).
    local crashes hangs
    crashes=$(find "$out/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
    hangs=$(find "$out/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
    echo "crash files     : $crashes"
    echo "hang files      : $hangs"
    if [ "$hangs" != 0 ]; then
        # Not a failure by itself: on a loaded machine a slow input can pass 1 s.
        echo "inputs over the time limit in fuzz/$out/default/hangs: time each (a loop, or just a busy machine?)" >&2
    fi
    if [ "$crashes" != 0 ]; then
        echo "crashes saved in fuzz/$out/default/crashes; fix each with a regression test, keep the input as fuzz/seeds/$t/regression-*, then move them away" >&2
        return 1
    fi
}

found=0
for t in "${selected[@]}"; do
    fuzz_one "$t" || found=1
done
exit "$found"
