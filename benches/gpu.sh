#!/usr/bin/env bash
# The GPU benchmark in one go: the device check against flex, then one ROCM iteration timed on
# the GPU by rocm-rs (examples/bench_rocm) and by PyTorch + diffusers + peft
# (benches/python/bench_rocm.py) on tiny, small and dreamshaper, per-step checkpointing on and off.
#
# Usage:
#   bash benches/gpu.sh
#
# Environment (defaults in brackets):
#   OUT           where the results go [target/gpu-run]: results.jsonl (one merged record per run),
#                 summary.md (the tables of docs/performance.md), log.txt (every run's stderr),
#                 nvidia-smi.txt, device_check.json
#   BIN_DIR       directory holding bench_rocm and device_check built with `--features cuda`, plain
#                 or xz-compressed as NAME.xz [target/release/examples]
#   DEVICE        the Rust side's --device [cuda]; TORCH_DEVICE the Python side's [cuda]
#   PYTHON        interpreter with torch, diffusers and peft [python3]
#   CONFIGS       [tiny small dreamshaper]; MODES [on off] (per-step checkpointing)
#   SIDES         [device_check rocm-rs pytorch]: which programs run (a device call's 64 MiB may
#                 not hold both binaries and the diffusers wheel: split the session in two calls)
#   BUDGET        seconds for the whole script [450]: each run's timeout is cut to what is left,
#                 and runs that no longer fit are recorded as skipped
#   WORK          where the raw per-run files go [a fresh temporary directory]; the summary covers
#                 every run found there, so two calls on one machine with the same WORK give one
#                 summary of both
#   QUICK=1       1 iteration after 1 warm-up everywhere (to test this script)
#
# Each run is its own process, timed with a timeout; a failing run is recorded (exit code, the end
# of its stderr) and the script goes on. Where nvidia-smi exists, the card's memory.used is polled
# every 100 ms during each run: smi_peak_mib is its maximum minus the reading before the run (the
# process's whole footprint, CUDA context included, for both sides alike). CUBECL_ENVIRONMENT is
# one per config, so the first run of each config compiles and autotunes its kernels cold
# (s_first_iter) and the second reuses them.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-target/gpu-run}"
BIN_DIR="${BIN_DIR:-target/release/examples}"
DEVICE="${DEVICE:-cuda}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
read -r -a configs <<<"${CONFIGS:-tiny small dreamshaper}"
read -r -a modes <<<"${MODES:-on off}"
BUDGET="${BUDGET:-450}"
SIDES=" ${SIDES:-device_check rocm-rs pytorch} "
mkdir -p "$OUT"
work="${WORK:-$(mktemp -d)}"
mkdir -p "$work"
start_s=$SECONDS
: >"$OUT/log.txt"

# The binaries, decompressed where needed (Python's lzma: no xz tool needed on the machine).
for name in bench_rocm device_check; do
    if [[ -f "$BIN_DIR/$name.xz" ]]; then
        "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$BIN_DIR/$name.xz" "$work/$name" && chmod +x "$work/$name"
    elif [[ -x "$BIN_DIR/$name" ]]; then
        cp "$BIN_DIR/$name" "$work/$name"
    else
        echo "gpu.sh: no $name in $BIN_DIR" | tee -a "$OUT/log.txt" >&2
    fi
done

have_smi=0
if command -v nvidia-smi >/dev/null; then
    have_smi=1
    { nvidia-smi; nvidia-smi -q -d CLOCK,MEMORY,POWER | head -80; } >"$OUT/nvidia-smi.txt" 2>&1
fi

smi_used() {
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1
}

# run NAME LIMIT COMMAND...: runs COMMAND with a timeout of min(LIMIT, what the budget has left),
# stdout to $work/NAME.out, stderr to the log, and writes NAME.{rc,wall,mem,base}.
order=()
run() {
    local name="$1" limit="$2"
    shift 2
    order+=("$name")
    local left=$((BUDGET - (SECONDS - start_s) - 15))
    if ((left < 20)); then
        echo skipped >"$work/$name.rc"
        echo "== $name: skipped (budget spent)" >>"$OUT/log.txt"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (timeout ${limit}s): $*" >>"$OUT/log.txt"
    local poller=""
    if ((have_smi)); then
        smi_used >"$work/$name.base"
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/$name.mem" 2>/dev/null &
        poller=$!
    fi
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$work/$name.out" 2>"$work/$name.err"
    echo $? >"$work/$name.rc"
    echo $((SECONDS - t0)) >"$work/$name.wall"
    [[ -n "$poller" ]] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null
    tail -c 20000 "$work/$name.err" >>"$OUT/log.txt"
    echo "== $name: exit $(cat "$work/$name.rc") after $(cat "$work/$name.wall") s" >>"$OUT/log.txt"
}

iters() { # iters CONFIG SIDE -> "--iters N --warmup W"
    if [[ "${QUICK:-0}" == 1 ]]; then
        echo "--iters 1 --warmup 1"
    elif [[ "$1" == dreamshaper && "$2" == rust ]]; then
        echo "--iters 3 --warmup 1"
    elif [[ "$1" == dreamshaper ]]; then
        echo "--iters 5 --warmup 2"
    else
        echo "--iters 10 --warmup 2"
    fi
}

rust() { # rust CONFIG MODE
    [[ "$SIDES" == *" rocm-rs "* ]] || return 0
    local limit=90
    [[ "$1" == dreamshaper ]] && limit=200
    # shellcheck disable=SC2046 # iters prints two flag pairs
    run "rocm-rs-$1-$2" "$limit" env CUBECL_ENVIRONMENT="gpu-$1" "$work/bench_rocm" \
        --config "$1" --checkpointing "$2" --device "$DEVICE" --json $(iters "$1" rust)
}
torch() { # torch CONFIG MODE
    [[ "$SIDES" == *" pytorch "* ]] || return 0
    # shellcheck disable=SC2046
    run "pytorch-$1-$2" 120 env PYTHONUNBUFFERED=1 "$PYTHON" benches/python/bench_rocm.py \
        --config "$1" --checkpointing "$2" --device "$TORCH_DEVICE" --json $(iters "$1" python)
}
has() { [[ " $1 " == *" $2 "* ]]; }

# Most wanted first, so that a spent budget cuts the least: the device check, the real-size
# workload in its first mode on both sides, the small configs, the real size's other modes.
[[ "$SIDES" == *" device_check "* ]] && run device_check 120 "$work/device_check" --device "$DEVICE" --json
big=dreamshaper
if has "${configs[*]}" "$big"; then
    torch "$big" "${modes[0]}"
    rust "$big" "${modes[0]}"
fi
for config in "${configs[@]}"; do
    [[ "$config" == "$big" ]] && continue
    for mode in "${modes[@]}"; do
        torch "$config" "$mode"
        rust "$config" "$mode"
    done
done
if has "${configs[*]}" "$big"; then
    for mode in "${modes[@]:1}"; do
        torch "$big" "$mode"
        rust "$big" "$mode"
    done
fi

cp "$work/device_check.out" "$OUT/device_check.json" 2>/dev/null
"$PYTHON" benches/python/gpu_summary.py "$work" "$OUT" "${order[@]}"
echo "gpu.sh: $((SECONDS - start_s)) s; results in $OUT"
