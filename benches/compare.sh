#!/usr/bin/env bash
# Compare one ROCM training step, Rust/Burn against PyTorch + diffusers + peft.
#
# Usage:
#   bash benches/compare.sh [tiny|small|all] [--iters N] [--warmup W] [--checkpointing on|off]
#
# Defaults: all configs, 10 timed iterations, 2 warm-up iterations, checkpointing off.
# For each config it runs, one after the other (never concurrently), the Rust example
# (target/release/examples/bench_rocm) and benches/python/bench_rocm.py with the same workload,
# the same flags and the same number of CPU threads, then prints both JSON lines and a table of
# the time and peak-memory ratios (rust / pytorch: below 1 means Rust is faster / smaller).
# Every JSON line is also appended, tagged with the date and git commit, to
# target/bench_rocm/compare-<YYYY-MM-DD>.jsonl.
#
# Environment:
#   PYTHON         interpreter with benches/python/requirements.txt installed
#                  (default /tmp/bench-venv/bin/python, else python3)
#   BENCH_THREADS  CPU threads for both sides (default: nproc). Sets RAYON_NUM_THREADS,
#                  OMP_NUM_THREADS and MKL_NUM_THREADS, and passes --threads to the Python side.
#
# Run it on an otherwise idle machine: both sides are timed with wall-clock time.
set -euo pipefail

usage() {
    sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

configs=(tiny small)
iters=10
warmup=2
checkpointing=off
while (($#)); do
    case "$1" in
        tiny | small) configs=("$1") ;;
        all) configs=(tiny small) ;;
        --iters) iters="${2:?--iters needs a value}"; shift ;;
        --warmup) warmup="${2:?--warmup needs a value}"; shift ;;
        --checkpointing)
            checkpointing="${2:?--checkpointing needs on or off}"; shift
            [[ "$checkpointing" == on || "$checkpointing" == off ]] || usage
            ;;
        -h | --help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
    shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-/tmp/bench-venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "note: $python not found, using python3 (see benches/python/requirements.txt)" >&2
    python=python3
fi
threads="${BENCH_THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

rust_bin="target/release/examples/bench_rocm"
py_script="benches/python/bench_rocm.py"
out_dir="target/bench_rocm"
out_file="$out_dir/compare-$(date -u +%Y-%m-%d).jsonl"
mkdir -p "$out_dir"

echo "== building the Rust example" >&2
cargo build --release --example bench_rocm

# Run one benchmark and print the last stdout line that is a JSON object (anything else on
# stdout is logging). Fails the script if the benchmark fails or prints no JSON.
run_json() {
    local output line
    output="$("$@")" || return
    line="$(grep -E '^\{.*\}$' <<<"$output" | tail -n 1 || true)"
    if [[ -z "$line" ]]; then
        printf 'error: no JSON line from: %s\n%s\n' "$*" "$output" >&2
        return 1
    fi
    echo "$line"
}

common=(--iters "$iters" --warmup "$warmup" --checkpointing "$checkpointing" --json)
results=()
for config in "${configs[@]}"; do
    echo "== $config: rust (threads $threads, checkpointing $checkpointing)" >&2
    rust_json="$(run_json "$rust_bin" --config "$config" "${common[@]}")"
    echo "$rust_json"
    echo "== $config: pytorch (threads $threads, checkpointing $checkpointing)" >&2
    py_json="$(run_json "$python" "$py_script" --config "$config" --threads "$threads" "${common[@]}")"
    echo "$py_json"
    results+=("$rust_json" "$py_json")
done

# Tag the lines, append them to the log and print the comparison table.
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$out_file" "$commit" "$threads" "$checkpointing" "${results[@]}" <<'PY'
import datetime
import json
import sys

# argv: log file, commit, threads, checkpointing, then the JSON lines as (rust, pytorch) pairs.
out_file, commit, threads, checkpointing = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
lines = [json.loads(arg) for arg in sys.argv[5:]]
rows = []
with open(out_file, "a") as log:
    for rust, pt in zip(lines[0::2], lines[1::2]):
        # The Rust line may omit these; the flags were the same for both runs.
        rust = {"impl": "rust", "checkpointing": checkpointing, **rust}
        for record in (rust, pt):
            log.write(json.dumps({"date": date, "commit": commit, "bench_threads": threads, **record}) + "\n")
        rows.append((rust, pt))


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def mib(v):
    # null where the platform has no peak-RSS reading (no /proc/self/status)
    return f"{v:.0f}" if v is not None else "n/a"


header = ("config", "rust s/iter", "pytorch s/iter", "time rust/pt", "rust MiB", "pytorch MiB", "mem rust/pt")
table = [header]
for rust, pt in rows:
    table.append((
        rust["config"],
        f"{rust['s_per_iter']:.4f}",
        f"{pt['s_per_iter']:.4f}",
        ratio(rust["s_per_iter"], pt["s_per_iter"]),
        mib(rust["peak_rss_mib"]),
        mib(pt["peak_rss_mib"]),
        ratio(rust["peak_rss_mib"], pt["peak_rss_mib"]),
    ))
widths = [max(len(row[i]) for row in table) for i in range(len(header))]
print()
for row in table:
    print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
print(f"\n(medians over the timed iterations; peak RSS of each process; appended to {out_file})")
PY
