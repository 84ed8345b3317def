#!/usr/bin/env python3
"""Merges the runs of ``benches/gpu.sh`` into ``results.jsonl`` and ``summary.md``.

Usage: ``gpu_summary.py WORK_DIR OUT_DIR RUN_NAME...``, where ``WORK_DIR`` holds, for each run
name, ``NAME.out`` (the program's stdout: its last line is its JSON record), ``NAME.rc``,
``NAME.wall`` and, where nvidia-smi was polled, ``NAME.base`` and ``NAME.mem`` (memory.used in
MiB before and during the run). Runs found in ``WORK_DIR`` but not named (an earlier call's)
come first, in name order. Standard library only.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def numbers(text: str | None) -> list[float]:
    out = []
    for line in (text or "").split():
        try:
            out.append(float(line))
        except ValueError:
            pass
    return out


def record(work: Path, name: str) -> dict:
    rc_text = (read(work / f"{name}.rc") or "").strip()
    rec: dict = {"run": name, "rc": int(rc_text) if rc_text.lstrip("-").isdigit() else rc_text or None}
    wall = numbers(read(work / f"{name}.wall"))
    rec["wall_s"] = wall[0] if wall else None
    base, mem = numbers(read(work / f"{name}.base")), numbers(read(work / f"{name}.mem"))
    if base and mem:
        rec["smi_base_mib"] = base[0]
        rec["smi_peak_mib"] = max(mem) - base[0]
    result = None
    for line in reversed((read(work / f"{name}.out") or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    rec["result"] = result
    if rec["rc"] != 0:
        err = (read(work / f"{name}.err") or "").strip().splitlines()
        rec["stderr_tail"] = err[-8:]
    return rec


def fmt(value, spec: str = ".3f", unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:{spec}}{unit}"


def ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"**{a / b:.2f}×**"


def commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def status(rec: dict | None) -> str:
    if rec is None:
        return "not run"
    if rec["rc"] == "skipped":
        return "skipped (time budget)"
    if rec["rc"] == 124 or rec["rc"] == 137:
        return f"timed out after {fmt(rec['wall_s'], '.0f', ' s')}"
    return f"failed (exit {rec['rc']})"


def summary(records: list[dict]) -> str:
    by_name = {r["run"]: r for r in records}
    gpu = next(
        (r["result"].get("gpu") for r in records if r["result"] and r["result"].get("gpu")), None
    )
    torch_v = next((r["result"].get("torch") for r in records if r["result"] and r["result"].get("torch")), None)
    lines = [
        f"# GPU run: {gpu or 'unknown card'}",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}, torch {torch_v or '—'}",
        "",
    ]
    check = by_name.get("device_check")
    lines.append("## Device check against flex (`examples/device_check.rs`)")
    lines.append("")
    if check and check["result"]:
        c = check["result"]
        lines.append(
            f"{c['device']} ({c['backend']}), config {c['config']}: worst judged difference "
            f"{c['worst_fraction_of_limit']:.2f} of its limit, tolerance {c['tolerance']:.0e}: "
            f"**{'PASS' if c['pass'] else 'FAIL'}** ({c['seconds']:.1f} s)"
        )
        lines += ["", "| quantity | max abs diff | max abs ref | relative | limit |", "|---|---|---|---|---|"]
        for row in c["rows"]:
            limit = "reported only" if row["limit"] is None else f"{row['limit']:.3e}"
            lines.append(f"| {row['name']} | {row['max_abs']:.3e} | {row['max_ref']:.3e} | {row['rel']:.3e} | {limit} |")
    else:
        lines.append(f"{status(check)}: " + " / ".join((check or {}).get("stderr_tail", [])[-3:]))
    lines += [
        "",
        "## One ROCM iteration, rocm-rs (Burn) against PyTorch + diffusers + peft",
        "",
        "s/iter: median of the timed iterations; first: the first iteration (cold start); peak: "
        "nvidia-smi memory.used during the run minus before it (whole process, CUDA context "
        "included); Burn reserved: the cubecl allocator's largest reserved bytes after an "
        "iteration; torch: max_memory_allocated / max_memory_reserved.",
        "",
        "| config | checkpointing | rocm-rs s/iter | PyTorch s/iter | **time ratio** | rocm-rs first | "
        "PyTorch first | rocm-rs peak | PyTorch peak | **memory ratio** | Burn reserved | torch alloc / reserved |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    configs = []
    for r in records:
        parts = r["run"].split("-")
        if r["run"].startswith(("rocm-rs-", "pytorch-")):
            key = (parts[-2], parts[-1])
            if key not in configs:
                configs.append(key)
    notes = []
    for config, mode in configs:
        rust = by_name.get(f"rocm-rs-{config}-{mode}")
        torch = by_name.get(f"pytorch-{config}-{mode}")
        rr = rust["result"] if rust and rust["result"] else None
        tr = torch["result"] if torch and torch["result"] else None
        for side, rec in (("rocm-rs", rust), ("PyTorch", torch)):
            if not (rec and rec["result"]):
                tail = " / ".join((rec or {}).get("stderr_tail", [])[-3:])
                notes.append(f"- {side} {config} checkpointing {mode}: {status(rec)}. {tail}")
        rs = rr and rr.get("s_per_iter")
        ts = tr and tr.get("s_per_iter")
        rp = rust.get("smi_peak_mib") if rust else None
        tp = torch.get("smi_peak_mib") if torch else None
        lines.append(
            "| "
            + " | ".join(
                [
                    config,
                    "per step" if mode == "on" else "off",
                    fmt(rs, ".4f"),
                    fmt(ts, ".4f"),
                    ratio(rs, ts),
                    fmt(rr and rr.get("s_first_iter"), ".2f", " s"),
                    fmt(tr and tr.get("s_first_iter"), ".2f", " s"),
                    fmt(rp, ".0f", " MiB"),
                    fmt(tp, ".0f", " MiB"),
                    ratio(rp, tp),
                    fmt(rr and rr.get("device_reserved_mib"), ".0f", " MiB"),
                    (
                        f"{tr['cuda_max_allocated_mib']:.0f} / {tr['cuda_max_reserved_mib']:.0f} MiB"
                        if tr and "cuda_max_allocated_mib" in tr
                        else "—"
                    ),
                ]
            )
            + " |"
        )
    params = []
    for config, _ in configs:
        for side in ("rocm-rs", "pytorch"):
            for mode in ("on", "off"):
                rec = by_name.get(f"{side}-{config}-{mode}")
                if rec and rec["result"]:
                    r = rec["result"]
                    params.append(
                        f"- {side} {config}: UNet {r.get('base_params')} parameters, "
                        f"{r.get('trainable_params')} trainable (LoRA)"
                    )
                    break
    lines += ["", *params]
    if notes:
        lines += ["", "Runs without a result:", "", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    work, out = Path(argv[0]), Path(argv[1])
    named = argv[2:]
    earlier = sorted(p.stem for p in work.glob("*.rc") if p.stem not in named)
    records = [record(work, name) for name in earlier + named]
    with open(out / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    text = summary(records)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
