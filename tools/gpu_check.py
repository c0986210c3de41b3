"""One prepared, bounded check of a CUDA machine: every figure golf can only measure on a GPU, in one JSON file.

    python tools/gpu_check.py --out DIR [--budget 540] [--parts a,b] [--wheels DIR]   # on the GPU machine
    python tools/gpu_check.py --dry-run --out DIR                                     # same code paths, tiny dims, CPU
    python tools/gpu_check.py --fetch-wheels DIR                                      # here: wheels for the GPU's python

Each part runs in its own subprocess with its own time bound (and never past the overall --budget); a part
that fails or times out is reported and the next one runs. DIR gets gpu_check.json (every figure, per part),
summary.txt (one line per part) and gpu_check.log (every part's output). Exit 0 when every part passed,
1 when any failed, 2 on bad arguments or (without --dry-run) no CUDA device.

Parts, in order (the most informative first, so a short budget still gets them):
  versions      python / torch / CUDA / triton, the device, which optional packages import (FA3 included)
  step          the packed recipe at record dims on 1 GPU: compile seconds, ms per step at one rank's
                micro-batch of an 8-GPU run, peak memory, projected steps on 8xH100
  reserve       GPTQ calibration + quantise + encode + write at record size, vs the recipe's reserve
  eval          the eval plan at record scale (40.5 M val tokens, 8 ranks): scoring throughput, TTT step
  torchrun      a 1-GPU torchrun of the packed train_gpt.py (~90 s, sample data, val capped) that writes,
                reloads and re-scores its artifact
  attention     the attention backend chosen (FA3 / Triton / SDPA) and its speed vs SDPA at record shapes
  kernels       each Triton kernel compiled in bf16 vs its torch twin: max error, ms
  kernel_tests  tests/test_kernels.py with Triton compiled (not interpreted)

8xH100 projections: the H200 runs the same GH100 compute (989 bf16 dense TFLOP/s, like the H100 SXM) with more
memory bandwidth (4.8 vs 3.35 TB/s), so a 1-H200 time is used as one H100 rank's time (factor 1.0; a
memory-bound phase may be somewhat slower on the H100) and inter-GPU communication is not included.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

H200_TO_H100 = 1.0  # see the docstring: same bf16 compute; communication not included
RECORD_VAL_TOKENS = 40_540_160  # FineWeb val at SP8192 (~40.5 M tokens; DESIGN.md)
WHEELS = ["brotli", "zstandard", "constriction", "zpaq"]  # what golf imports that the GPU image lacks
WHEEL_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                   "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


# ---------------------------------------------------------------- context shared by the parts

def recipe_config(dry_run: bool):
    """The Config the packed default was made from: record preset on CUDA, smoke preset on CPU for --dry-run."""
    import dataclasses

    import torch

    from golf.config import PRESETS
    from golf.recipes import RECIPES

    if dry_run:
        return dataclasses.replace(PRESETS["smoke"](RECIPES["default"]), device="cpu", compile=False)
    return dataclasses.replace(RECIPES["default"], device="cuda", compile=torch.cuda.is_available())


def sync_fn(device):
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def peak_memory_bytes(device) -> int | None:
    import torch

    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def trained_like_(model, seed: int = 0) -> None:
    """Matrices drawn like trained weights (Gaussian rows, log-normal row scales, sigma 0.5): near-init weights
    have zero-initialised projections and would make quantise + encode look cheaper than it is."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                rows = torch.randn(p.shape, generator=gen) * 0.02
                rows *= torch.exp(0.5 * torch.randn(p.shape[0], 1, generator=gen))
                p.copy_(rows.to(p.device, p.dtype))


# ---------------------------------------------------------------- the parts (each returns a dict of figures)

def part_versions(args) -> dict:
    import importlib.util
    import platform

    import torch

    from golf.kernels.attention import attention_backend_available

    figures = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "cuda_available": torch.cuda.is_available()}
    try:
        import triton

        figures["triton"] = triton.__version__
    except ImportError:
        figures["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        figures.update(device=props.name, capability=f"{props.major}.{props.minor}", device_count=torch.cuda.device_count(),
                       memory_gib=round(props.total_memory / 2**30, 1))
    figures["packages"] = {name: importlib.util.find_spec(name) is not None
                           for name in WHEELS + ["sentencepiece", "numpy", "flash_attn_interface"]}
    figures["fa3_available"] = attention_backend_available("fa3", "cuda")
    return figures


def part_step(args) -> dict:
    import torch

    from golf.bench.step import time_steps

    cfg = recipe_config(args.dry_run)
    steps, warmup = (3, 1) if args.dry_run else (10, 3)
    r = time_steps(cfg, steps, warmup, world_size=8)
    budget = cfg.max_wallclock_seconds - cfg.quant_reserve_seconds
    ms_8gpu = r["ms"] * H200_TO_H100
    figures = {**r, "tokens_per_rank_step": cfg.train_batch_tokens // 8, "compile": cfg.compile,
               "projected_ms_per_step_8xh100": ms_8gpu, "train_budget_s": budget,
               "projected_steps_8xh100": int(budget / (ms_8gpu / 1000))}
    figures["peak_memory_gib"] = None if r["peak_memory_bytes"] is None else round(r["peak_memory_bytes"] / 2**30, 2)
    figures["torch_threads"] = torch.get_num_threads()
    return figures


def part_reserve(args) -> dict:
    import torch

    from golf.bench.step import RandomTokens
    from golf.dist import setup_dist
    from golf.kernels.attention import select_attention
    from golf.model.gpt import GPT
    from golf.params import assign_rules, param_rules
    from golf.train import calibrate_hessians, quantize_and_write

    cfg = recipe_config(args.dry_run)
    env = setup_dist(cfg.device)
    _, attention_fn = select_attention(env.device.type, cfg.attention)
    model = GPT(cfg, attention_fn).to(env.device)
    trained_like_(model)
    model.set_progress(0, 1.0)
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    sync = sync_fn(env.device)
    sync()
    t0 = time.perf_counter()
    rows: dict = {}  # calibration rows per Hessian: AWQ-lite (the default's) ranks its groups by activation RMS
    hessians = calibrate_hessians(cfg, env, model, rules, RandomTokens(cfg.vocab_size, 1), rows)
    sync()
    calib_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        artifact_bytes = quantize_and_write(cfg, model, rules, hessians, os.path.join(tmp, "final_model.golf"), rows)
        write_s = time.perf_counter() - t0
    total = (calib_s + write_s) * H200_TO_H100
    return {"calibration_s": calib_s, "quantise_encode_write_s": write_s, "artifact_bytes": artifact_bytes,
            "calibration_tokens": cfg.gptq_calib_batches * cfg.gptq_calib_tokens, "codec": cfg.codec,
            "reserve_s": cfg.quant_reserve_seconds, "projected_reserve_use_s": total,
            "fits": total <= cfg.quant_reserve_seconds, "weights": "Gaussian rows, log-normal row scales",
            "peak_memory_bytes": peak_memory_bytes(env.device), "torch": torch.__version__}


def part_eval(args) -> dict:
    import re

    import torch

    from golf.dist import setup_dist
    from golf.kernels.attention import select_attention
    from golf.model.gpt import GPT
    from golf.step import autocast_dtype
    from golf.ttt import eval_plan_lines

    cfg = recipe_config(args.dry_run)
    env = setup_dist(cfg.device)
    _, attention_fn = select_attention(env.device.type, cfg.attention)
    model = GPT(cfg, attention_fn).to(env.device).eval()
    val_tokens = 20_000 if args.dry_run else RECORD_VAL_TOKENS
    tokens = torch.randint(0, cfg.vocab_size, (val_tokens,), generator=torch.Generator().manual_seed(0))
    tokens[:: 1000] = 1  # a BOS every ~1000 tokens, like FineWeb documents
    lines = eval_plan_lines(model, tokens, cfg, 8, env.device, autocast_dtype(env.device))
    estimates = {m.group(1): float(m.group(2)) for line in lines
                 for m in [re.match(r"eval_plan pass:(\w+) .*? est:([\d.]+)s", line)] if m}
    total = [float(m.group(1)) for line in lines for m in [re.search(r"eval_phase_est:([\d.]+)s", line)] if m]
    fwd_us = [float(m.group(1)) for line in lines for m in [re.search(r"fwd_us_per_token:([\d.]+)", line)] if m]
    figures = {"val_tokens": val_tokens, "world_size": 8, "plan_lines": lines, "pass_estimates_s": estimates,
               "eval_budget_s": cfg.eval_max_seconds, "peak_memory_bytes": peak_memory_bytes(env.device)}
    if fwd_us and fwd_us[0] > 0:
        figures["score_tokens_per_s_per_gpu"] = 1e6 / fwd_us[0]
    if total:
        figures["projected_eval_s_8xh100"] = total[0] * H200_TO_H100
        figures["fits"] = figures["projected_eval_s_8xh100"] <= cfg.eval_max_seconds
    return figures


def part_torchrun(args) -> dict:
    import re
    import shutil

    code = REPO_ROOT / "train_gpt.py"
    if not code.exists():
        raise RuntimeError(f"{code}: not found (python tools/pack.py writes it)")
    if not (REPO_ROOT / "data" / "datasets" / "sample_sp8192_caseops").exists():  # the default's CaseOps sample
        subprocess.run([sys.executable, "data/prepare_sample.py"], cwd=REPO_ROOT, check=True, timeout=300)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        shutil.copy(code, run_dir / "train_gpt.py")  # away from golf/: it must run as shipped
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
        if os.environ.get("GOLF_WHEEL_SITE"):
            env["PYTHONPATH"] = os.environ["GOLF_WHEEL_SITE"]
        env.update(DATA_PATH=str(REPO_ROOT / "data/datasets/sample_sp8192_caseops"),
                   TOKENIZER_PATH=str(REPO_ROOT / "data/tokenizers/sample_8192_bpe_caseops.model"),
                   RUN_ID="gpu_check", OUT_DIR=str(run_dir), VAL_MAX_TOKENS="65536")
        if args.dry_run:
            # Bounded by steps, not seconds: a loaded CI machine must not turn the dry run into a budget overrun.
            env.update(PRESET="smoke", ITERATIONS="3", MAX_WALLCLOCK_SECONDS="300", QUANT_RESERVE_SECONDS="120",
                       VAL_MAX_TOKENS="8192", TTT_ENABLED="0")
        else:
            env.update(MAX_WALLCLOCK_SECONDS="90", COMPILE_WARMUP_STEPS="3")
        t0 = time.perf_counter()
        proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node=1", "train_gpt.py"], cwd=run_dir,
                              env=env, capture_output=True, text=True, timeout=args.part_timeout)
        wall = time.perf_counter() - t0
        out = proc.stdout + proc.stderr
        print(out[-6000:])
        artifact = run_dir / "final_model.golf"
        figures = {"returncode": proc.returncode, "wall_s": wall, "artifact_written": artifact.exists(),
                   "artifact_bytes": artifact.stat().st_size if artifact.exists() else None}
    for key, pattern in [("roundtrip_bpb", r"final_roundtrip val_loss:\S+ val_bpb:(\S+)"),
                         ("ttt_bpb", r"final_ttt val_loss:\S+ val_bpb:(\S+)"),
                         ("prequant_bpb", r"prequant val_loss:\S+ val_bpb:(\S+)"),
                         ("total_bytes", r"total_bytes:(\d+)"), ("steps", r"stopped step:(\d+)"),
                         ("attention_backend", r"attention_backend:(\S+)"), ("eval_s", r"eval_time:([\d.]+)s")]:
        found = re.findall(pattern, out)
        figures[key] = found[-1] if found else None
    if proc.returncode != 0 or figures["roundtrip_bpb"] is None:
        raise RuntimeError(f"torchrun exited {proc.returncode}; last output: {out.strip().splitlines()[-1:]}")
    return figures


def part_attention(args) -> dict:
    import torch

    from golf.bench.kernels import forward_backward, median_fwd_bwd_ms
    from golf.kernels.attention import ATTENTION_BACKENDS, select_attention

    cfg = recipe_config(args.dry_run)
    on_gpu = cfg.device == "cuda"
    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    name, fn = select_attention(device, "auto")
    head_dim = cfg.model_dim // cfg.num_heads
    rows = max(1, cfg.train_batch_tokens // 8 // cfg.train_seq_len) if on_gpu else 1
    seq_len = cfg.train_seq_len if on_gpu else 64
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(rows, cfg.num_heads, seq_len, head_dim, generator=gen).to(device, dtype)
    k, v = (torch.randn(rows, cfg.num_kv_heads, seq_len, head_dim, generator=gen).to(device, dtype) for _ in range(2))
    grad = torch.randn(q.shape, generator=gen).to(device, dtype)
    sdpa = ATTENTION_BACKENDS["sdpa"]
    err = max((a.float() - b.float()).abs().max().item()
              for a, b in zip(forward_backward(fn, [q, k, v], grad), forward_backward(sdpa, [q, k, v], grad)))
    runs = 3 if args.dry_run else 10
    chosen_ms = median_fwd_bwd_ms(fn, [q, k, v], grad, runs, sync_fn(torch.device(device)))
    sdpa_ms = median_fwd_bwd_ms(sdpa, [q, k, v], grad, runs, sync_fn(torch.device(device)))
    return {"backend": name, "shape": list(q.shape), "kv_heads": cfg.num_kv_heads, "dtype": str(dtype),
            "chosen_ms": chosen_ms, "sdpa_ms": sdpa_ms, "chosen_over_sdpa": chosen_ms / sdpa_ms,
            "max_abs_err_vs_sdpa": err}


def part_kernels(args) -> dict:
    import torch

    from golf.bench.kernels import bench_kernel_cases, forward_backward, median_fwd_bwd_ms

    on_gpu = torch.cuda.is_available() and not args.dry_run
    sync = sync_fn(torch.device("cuda" if on_gpu else "cpu"))
    figures = {}
    for name, shape, kernel, twin, inputs in bench_kernel_cases(on_gpu):
        twin_out = twin(*inputs)
        grad_out = torch.randn(twin_out.shape, device=twin_out.device).to(twin_out.dtype)
        err = max((a.float() - b.float()).abs().max().item() for a, b in
                  zip(forward_backward(kernel, inputs, grad_out), forward_backward(twin, inputs, grad_out)))
        runs = 3 if args.dry_run else 10
        kernel_ms = median_fwd_bwd_ms(kernel, inputs, grad_out, runs, sync)
        twin_ms = median_fwd_bwd_ms(twin, inputs, grad_out, runs, sync)
        figures[name] = {"shape": shape, "max_abs_err": err, "kernel_ms": kernel_ms, "twin_ms": twin_ms,
                         "kernel_over_twin": kernel_ms / twin_ms}
    return figures


def part_kernel_tests(args) -> dict:
    import re

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py"]
    if args.dry_run:
        cmd += ["-k", "leaky"]  # the interpreter path is the suite's own; one kernel shows the part runs
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=args.part_timeout)
    print(proc.stdout[-4000:] + proc.stderr[-2000:])
    summary = re.findall(r"(\d+ (?:passed|failed)[^\n=]*)", proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"pytest exited {proc.returncode}: {summary[-1] if summary else 'no summary'}")
    return {"summary": summary[-1] if summary else None, "compiled": not args.dry_run}


# name -> (function, seconds on the GPU, seconds in --dry-run). The GPU bounds add up to more than the default
# --budget of 540 s on purpose: a part that finishes early leaves its time to the later ones. The dry-run bounds
# are generous because a shared CI machine can run several times slower than an idle one.
PARTS = {
    "versions": (part_versions, 60, 120),
    "step": (part_step, 150, 300),
    "reserve": (part_reserve, 120, 300),
    "eval": (part_eval, 90, 300),
    "torchrun": (part_torchrun, 240, 400),
    "attention": (part_attention, 45, 120),
    "kernels": (part_kernels, 60, 200),
    "kernel_tests": (part_kernel_tests, 120, 200),
}


# ---------------------------------------------------------------- running the parts

def run_part_here(args) -> int:
    """Child process: run one part, write {"ok", "figures" | "error"} as JSON to --result."""
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before golf.kernels defines its @triton.jit kernels
    fn = PARTS[args.part][0]
    try:
        result = {"ok": True, "figures": fn(args)}
    except Exception as e:  # reported, never fatal to the other parts
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    Path(args.result).write_text(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


def install_wheels(wheel_dir: Path) -> str:
    """pip-install the carried wheels into a private site dir (no network, no deps); -> that dir."""
    site = Path(tempfile.gettempdir()) / "golf_wheel_site"
    wheels = sorted(str(p) for p in wheel_dir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"gpu_check: {wheel_dir}: no .whl files (python tools/gpu_check.py --fetch-wheels {wheel_dir})")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=True)
    return str(site)


def fetch_wheels(wheel_dir: Path, python_version: str) -> int:
    """Download the GPU machine's missing packages as wheels for its python (run here, where PyPI is reachable)."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(wheel_dir)]
    for platform_tag in WHEEL_PLATFORMS:
        cmd += ["--platform", platform_tag]
    rc = subprocess.run(cmd + WHEELS).returncode
    if rc == 0:
        print(f"gpu_check: wheels for python {python_version} in {wheel_dir}: "
              f"{', '.join(sorted(p.name for p in wheel_dir.glob('*.whl')))}")
    return rc


def figure_text(name: str, figures: dict) -> str:
    """The figures of a part that a reader wants in one line."""
    keys = {"versions": ["device", "torch", "cuda", "triton", "fa3_available"],
            "step": ["attention", "ms", "compile_s", "peak_memory_gib", "projected_steps_8xh100"],
            "reserve": ["calibration_s", "quantise_encode_write_s", "reserve_s", "artifact_bytes"],
            "eval": ["score_tokens_per_s_per_gpu", "projected_eval_s_8xh100", "eval_budget_s"],
            "torchrun": ["steps", "roundtrip_bpb", "ttt_bpb", "total_bytes", "wall_s"],
            "attention": ["backend", "chosen_ms", "sdpa_ms", "max_abs_err_vs_sdpa"],
            "kernel_tests": ["summary"]}.get(name)
    if name == "kernels":
        return ", ".join(f"{k} err {v['max_abs_err']:.2e} x{v['kernel_over_twin']:.2f}" for k, v in figures.items())
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return " ".join(f"{k}={fmt(figures.get(k))}" for k in keys or [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json, summary.txt, gpu_check.log")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny dims, same code paths (what CI runs)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all parts together (default 540 on the GPU, 1500 for --dry-run)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--wheels", help="folder of wheels to install first (the GPU image lacks brotli & co.)")
    parser.add_argument("--fetch-wheels", metavar="DIR", help="download those wheels here, then exit")
    parser.add_argument("--python-version", default="3.12", help="with --fetch-wheels: the GPU machine's python")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # child process: run this one part
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--part-timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.part:
        return run_part_here(args)
    if args.fetch_wheels:
        return fetch_wheels(Path(args.fetch_wheels), args.python_version)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"gpu_check: --parts: unknown part {', '.join(unknown)} (choices: {', '.join(PARTS)})", file=sys.stderr)
        return 2
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (use --dry-run for the CPU dry run)", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled kernels on the GPU
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if args.wheels:
        site = install_wheels(Path(args.wheels))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), site])
        env["GOLF_WHEEL_SITE"] = site

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.budget is None:
        args.budget = 1500.0 if args.dry_run else 540.0
    deadline = time.monotonic() + args.budget
    report = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "budget_s": args.budget, "parts": {}}
    with open(out / "gpu_check.log", "w") as log, tempfile.TemporaryDirectory() as tmp:
        for name in parts:
            bound = PARTS[name][2 if args.dry_run else 1]
            timeout = min(bound, deadline - time.monotonic())
            if timeout < 5:
                report["parts"][name] = {"ok": False, "error": "skipped: the overall budget is spent", "seconds": 0.0}
                continue
            result_path = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--result", str(result_path),
                   "--part-timeout", str(max(1.0, timeout - 5))] + (["--dry-run"] if args.dry_run else [])
            log.write(f"\n===== {name} (bound {timeout:.0f} s)\n")
            log.flush()
            t0 = time.perf_counter()
            try:
                subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
                result = (json.loads(result_path.read_text()) if result_path.exists()
                          else {"ok": False, "error": "the part died before writing its result (see gpu_check.log)"})
            except subprocess.TimeoutExpired:
                result = {"ok": False, "error": f"timed out after {timeout:.0f} s"}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            report["parts"][name] = result
            print(f"{name:<13} {'PASS' if result['ok'] else 'FAIL'} {result['seconds']:>6.1f}s", flush=True)
    report["passed"] = all(r["ok"] for r in report["parts"].values())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"gpu_check {'dry run (CPU, tiny dims)' if args.dry_run else 'on the GPU'} {report['started']}"]
    for name, r in report["parts"].items():
        detail = figure_text(name, r["figures"]) if r["ok"] else r["error"]
        lines.append(f"{'PASS' if r['ok'] else 'FAIL'} {name:<13} {r['seconds']:>6.1f}s  {detail}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
