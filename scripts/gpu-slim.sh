#!/usr/bin/env bash
# Makes the checkout small enough to travel to a GPU machine, and back.
#
# The device tool sends the working tree (tracked files, and untracked files
# git does not ignore) plus the ignored paths named in `carry`, 64 MiB in all.
# Our tracked tree is ~150 MB, mostly fixtures the GPU check does not read, so
# before the run they are moved out of the checkout, and put back after:
#
#   scripts/build-cuda.sh                      # dist/dreamartist-cuda.xz (ignored; carry it)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl diffusers   # (ignored; carry it)
#   scripts/gpu-slim.sh out                    # moves the rest aside, prints what travels
#   device run: command "scripts/gpu-bench.sh", carry ["dist", ".whl"], timeout 600
#   scripts/gpu-slim.sh in                     # everything back (git status is clean again)
#
# Kept: the fixtures named in GPU_FIXTURES (default: tiny-sd1 tiny-sd2v, without
# their single files; tiny-sdxl does not fit beside them and the binary: SDXL is
# checked at its real size by the bench instead), sources, scripts, small files.
# Moved aside (to $STASH, default ../gpu-slim-stash, outside the checkout): every
# other tracked file over 256 KiB. Nothing is deleted or committed.
set -euo pipefail
cd "$(dirname "$0")/.."
stash="${STASH:-$(cd .. && pwd)/gpu-slim-stash}"
keep_fixtures="${GPU_FIXTURES:-tiny-sd1 tiny-sd2v}"

kept() {
    local f=$1
    case "$f" in
        */single_file.safetensors) return 1 ;;
    esac
    for fx in $keep_fixtures; do
        case "$f" in
            tests/fixtures/$fx/cases.toml | tests/fixtures/$fx/goldens.safetensors | tests/fixtures/$fx/model/*) return 0 ;;
        esac
    done
    return 1
}

# What would travel: existing tracked and untracked-not-ignored files, plus
# the carried folders.
travel_size() {
    local tree=0 f
    while IFS= read -r -d '' f; do
        [ -f "$f" ] && tree=$((tree + $(stat -c %s "$f")))
    done < <(git ls-files -z -co --exclude-standard)
    local carried=0
    for c in dist .whl; do
        [ -e "$c" ] && carried=$((carried + $(du -sb "$c" | cut -f1)))
    done
    echo "travels: tree $((tree / 1048576)) MiB + carried (dist, .whl) $((carried / 1048576)) MiB = $(((tree + carried) / 1048576)) MiB of 64"
}

case "${1:-}" in
    out)
        mkdir -p "$stash"
        git ls-files -z | while IFS= read -r -d '' f; do
            [ -f "$f" ] || continue
            [ "$(stat -c %s "$f")" -gt 262144 ] || continue
            kept "$f" && continue
            mkdir -p "$stash/$(dirname "$f")"
            mv "$f" "$stash/$f"
        done
        travel_size
        ;;
    in)
        [ -d "$stash" ] || { echo "nothing stashed at $stash"; exit 0; }
        (cd "$stash" && find . -type f -print0) | while IFS= read -r -d '' f; do
            mkdir -p "$(dirname "$f")"
            mv "$stash/$f" "$f"
        done
        rm -rf "$stash"
        git status --short | head
        ;;
    size) travel_size ;;
    *)
        echo "usage: scripts/gpu-slim.sh out|in|size" >&2
        exit 2
        ;;
esac
