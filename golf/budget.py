"""Wallclock budget: a plan of seconds per phase before step 0, the training stop rule, planned vs actual at the end.

Training phases share the challenge's 600 s (training + EMA + GPTQ calibration + serialisation); evaluation has its
own 600 s. Compile warm-up is untimed because it resets weights, optimiser and data afterwards.
"""

import time

import torch

from golf.dist import all_reduce_


class WallclockBudget:
    def __init__(self, cfg, device: torch.device):
        self.device = device
        self.planned = {
            "warmup": None,  # untimed
            "train": cfg.max_wallclock_seconds - cfg.quant_reserve_seconds,
            "reserve": cfg.quant_reserve_seconds,  # EMA swap, GPTQ calibration, quantise, write the artifact
            "eval": cfg.eval_max_seconds,
        }
        self.limits = {"train_total": cfg.max_wallclock_seconds, "eval_total": cfg.eval_max_seconds}
        self.actual: dict[str, float] = {}
        self.warmup_steps = cfg.compile_warmup_steps
        self.train_elapsed = 0.0
        self.train_t0 = 0.0
        self.phase_t0: dict[str, float] = {}

    @property
    def train_seconds(self) -> float:
        return self.planned["train"]

    def plan_line(self) -> str:
        p = self.planned
        return (f"budget_plan: warmup:{self.warmup_steps} steps (untimed, state reset after) train:{p['train']:.1f}s "
                f"reserve:{p['reserve']:.1f}s (ema+gptq+serialise) of {self.limits['train_total']:.1f}s | "
                f"eval:{p['eval']:.1f}s (sliding window + ttt) of its own {self.limits['eval_total']:.1f}s")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self, phase: str) -> None:
        self._sync()
        self.phase_t0[phase] = time.perf_counter()
        if phase == "train":
            self.train_t0 = self.phase_t0[phase]

    def stop(self, phase: str) -> float:
        self._sync()
        self.actual[phase] = self.actual.get(phase, 0.0) + time.perf_counter() - self.phase_t0.pop(phase)
        return self.actual[phase]

    def tick(self) -> bool:
        """After each training step: the slowest rank's elapsed training time (one all-reduce, so LR, progress
        and the stop step agree on every rank; .item() waits for the step's kernels); True when another step as
        long as the last one would overrun the planned training time, so the plan is never crossed by a step."""
        clock = torch.tensor([time.perf_counter() - self.train_t0], dtype=torch.float64, device=self.device)
        elapsed = all_reduce_(clock, op=torch.distributed.ReduceOp.MAX).item()
        last_step = elapsed - self.train_elapsed
        self.train_elapsed = elapsed
        return elapsed + last_step >= self.planned["train"]

    def progress(self, step: int, iterations: int) -> float:
        """Fraction of training done: by time or by the step cap, whichever is further along."""
        return min(1.0, max(self.train_elapsed / self.planned["train"], step / iterations))

    def report_lines(self) -> list[str]:
        """Planned vs actual per phase, and the two challenge totals."""
        lines = []
        for phase, planned in self.planned.items():
            actual = self.actual.get(phase)
            if actual is not None:
                plan = "untimed" if planned is None else f"{planned:.1f}s"
                lines.append(f"budget_actual phase:{phase} planned:{plan} actual:{actual:.1f}s")
        train_total = self.actual.get("train", 0.0) + self.actual.get("reserve", 0.0)
        lines.append(f"budget_total train+reserve:{train_total:.1f}s/{self.limits['train_total']:.1f}s "
                     f"eval:{self.actual.get('eval', 0.0):.1f}s/{self.limits['eval_total']:.1f}s")
        return lines
