"""One command to check a CUDA machine end to end and print a pass/fail table.

    python tools/gpu_check.py

Prints device and versions, then runs: the kernel tests compiled (TRITON_INTERPRET unset, so
they compare kernels and twins on the GPU in fp32 and bf16), `python -m golf.bench kernels`,
`python -m golf.bench step` if that benchmark exists, and a 60-second
`torchrun --standalone --nproc_per_node=<gpus> train_gpt.py` if train_gpt.py exists.
Exit 0 when every step passed, 1 otherwise, 2 when there is no CUDA device.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_logged(cmd, env, timeout_s):
    """Run cmd in the repo root, echoing its output live; -> (return code, output text)."""
    print(f"\n$ {' '.join(cmd)}", flush=True)
    lines = []
    with subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return 124, "".join(lines) + f"\n(timed out after {timeout_s} s)"
    return proc.returncode, "".join(lines)


def last_matching(pattern, text, default="-"):
    found = re.findall(pattern, text, flags=re.MULTILINE)
    return found[-1] if found else default


def kernel_ratios(bench_output):
    """'name xRATIO (err E)' for each table row of `golf.bench kernels` (ms, ms, ratio, error at the end)."""
    rows = re.findall(r"^(\w+)\s.*?\s([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)$", bench_output, flags=re.MULTILINE)
    return ", ".join(f"{name} x{ratio} (err {err})" for name, _k, _t, ratio, err in rows) or "-"


def main():
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; run it on a GPU box")
        return 2
    import triton

    gpus = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    print(f"devices: {gpus} x {props.name}, capability {props.major}.{props.minor}, "
          f"{props.total_memory / 2**30:.0f} GiB each")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton.__version__}, python {sys.version.split()[0]}")

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled kernels
    results = []  # (step, passed, figure)

    rc, out = run_logged([sys.executable, "-m", "pytest", "-q", "tests/test_kernels.py"], env, 900)
    results.append(("kernel tests (compiled)", rc == 0, last_matching(r"^=*\s*(\d+ (?:passed|failed).*?)\s*=*$", out)))

    rc, out = run_logged([sys.executable, "-m", "golf.bench", "kernels"], env, 900)
    results.append(("bench kernels", rc == 0, kernel_ratios(out)))

    if (REPO_ROOT / "golf" / "bench" / "step.py").exists():
        rc, out = run_logged([sys.executable, "-m", "golf.bench", "step"], env, 900)
        results.append(("bench step", rc == 0, last_matching(r"^(.+)$", out)))

    if (REPO_ROOT / "train_gpt.py").exists():
        train_env = dict(env, MAX_WALLCLOCK_SECONDS="60", RUN_ID="gpu_check")
        rc, out = run_logged(["torchrun", "--standalone", f"--nproc_per_node={gpus}", "train_gpt.py"], train_env, 1800)
        bpb = last_matching(r"final_roundtrip val_loss:\S+ val_bpb:(\S+)", out)
        total = last_matching(r"total_bytes:(\d+)", out)
        results.append((f"train_gpt.py 60 s on {gpus} GPU", rc == 0, f"val_bpb {bpb}, total_bytes {total}"))

    print("\n" + "=" * 100)
    print(f"{'step':<28} {'result':<6} figures")
    for step, passed, figure in results:
        print(f"{step:<28} {'PASS' if passed else 'FAIL':<6} {figure}")
    return 0 if all(passed for _, passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
