"""Loop schedules: which unique block runs at each virtual layer, and the extras that ride along.

The model has `num_layers` unique blocks: a prelude [0, loop_start), a looped segment [loop_start, loop_end]
and a coda after it. A schedule decides how many passes the segment gets in this forward (training or
evaluation, training progress, a per-step sample), then runs the virtual layers with optional per-pass
adapters, U-Net skips and two-lane late layers.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from golf.config import GolfError
from golf.model.blocks import LaneMix, rms_norm


@dataclass(frozen=True)
class VirtualLayer:
    block: int  # index into GPT.blocks
    loop_pass: int  # which pass through the looped segment; -1 in the prelude and coda
    grad: bool  # False: runs without autograd (truncated recurrence)


def virtual_layers(num_blocks: int, start: int, end: int, passes: int, grad_passes: int) -> list[VirtualLayer]:
    """Prelude, `passes` passes over blocks [start, end] (only the last `grad_passes` with gradients), coda."""
    prelude = [VirtualLayer(i, -1, True) for i in range(start)]
    loop = [VirtualLayer(i, p, p >= passes - grad_passes) for p in range(passes) for i in range(start, end + 1)]
    coda = [VirtualLayer(i, -1, True) for i in range(end + 1, num_blocks)]
    return prelude + loop + coda


def sample_passes(seed: int, step: int, mean: float, sigma: float, cap: int) -> int:
    """Poisson-lognormal pass count (Recursive NanoChat): rate = exp(N(ln mean - sigma^2/2, sigma)) so E[rate] = mean,
    count ~ Poisson(rate) clipped to [1, cap]. Seeded by (seed, step) alone, so every rank draws the same depth."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    log_rate = math.log(mean) - sigma**2 / 2 + sigma * torch.randn((), generator=g)
    count = torch.poisson(log_rate.exp(), generator=g).item()
    return int(min(max(count, 1), cap))


class PassAdapter(nn.Module):
    """x + up(down(norm x)) at rank r: lets a shared block act differently on each pass (nano-osrt).
    `up` starts at zero, so a fresh adapter is the identity."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(rms_norm(x)))


class LoopSchedule(nn.Module):
    """Runs the virtual layers. Subclasses set the pass counts (`train_passes` follows set_progress) and may
    transform the state entering each pass (`enter_pass`) or truncate gradients (`grad_passes`)."""

    def __init__(self, cfg, grad_passes: int, max_train_passes: int):
        super().__init__()
        seg = cfg.loop_end - cfg.loop_start + 1
        if not 0 <= cfg.loop_start <= cfg.loop_end < cfg.num_layers:
            raise GolfError(f"LOOP_START={cfg.loop_start} / LOOP_END={cfg.loop_end}: need "
                            f"0 <= LOOP_START <= LOOP_END < NUM_LAYERS={cfg.num_layers}")
        if cfg.train_loops < 1 or cfg.eval_loops < 0:
            raise GolfError(f"TRAIN_LOOPS={cfg.train_loops} / EVAL_LOOPS={cfg.eval_loops}: need >= 1 / >= 0")
        if not 0 <= cfg.lane_layers <= cfg.num_layers - 1 - cfg.loop_end:
            raise GolfError(f"LANE_LAYERS={cfg.lane_layers}: two-lane layers must lie in the coda "
                            f"(at most NUM_LAYERS - 1 - LOOP_END = {cfg.num_layers - 1 - cfg.loop_end})")
        self.num_blocks, self.start, self.end = cfg.num_layers, cfg.loop_start, cfg.loop_end
        self.grad_passes = grad_passes
        self.train_passes = cfg.train_loops
        self.eval_passes = cfg.eval_loops or cfg.train_loops
        # One adapter per (pass, looped block) over the passes training uses; later eval passes reuse the last.
        self.adapter_passes = cfg.train_loops
        self.adapters = nn.ModuleList(
            PassAdapter(cfg.model_dim, cfg.pass_adapter_rank) for _ in range(self.adapter_passes * seg)
        ) if cfg.pass_adapter_rank > 0 else None
        # Skip weights (n, D). Without skip_gates: zero-init so a fresh model is the plain stack; weight j joins
        # virtual layer j to the j-th layer from the end, so the pairing is stable when the depth changes.
        # With skip_gates (the record, R:1225-1237, R:1365-1392): the first depth//2 virtual layers are the
        # encoder, decoder layer j reads encoder layer depth//2-1-j, x = lerp(w_j * skip, x, sigmoid(gate_j)),
        # w init 1 and gate init 0 (an even mix at the start).
        max_depth = cfg.num_layers + (max_train_passes - 1) * seg
        n_weights = max_depth // 2 if cfg.unet_skips else 0
        skip_init = torch.ones if cfg.skip_gates else torch.zeros
        self.skip_weights = nn.Parameter(skip_init(n_weights, cfg.model_dim)) if cfg.unet_skips else None
        self.skip_gates = nn.Parameter(torch.zeros(n_weights, cfg.model_dim)) if cfg.unet_skips and cfg.skip_gates \
            else None
        self.lanes = nn.ModuleList(LaneMix(cfg.lane_keep_init) for _ in range(cfg.lane_layers))
        # DDP must look for unused parameters when some extras idle on some steps (fewer passes than maximum).
        self.varying_graph = False

    def set_progress(self, step: int, frac: float) -> None:
        """Called by the train loop before each optimiser step: step index and fraction of training done."""

    def enter_pass(self, x: torch.Tensor, prelude_out: torch.Tensor) -> torch.Tensor:
        return x

    def plan(self) -> list[VirtualLayer]:
        passes = self.train_passes if self.training else self.eval_passes
        return virtual_layers(self.num_blocks, self.start, self.end, passes, min(passes, self.grad_passes))

    def skip_pairing(self, depth: int) -> tuple[int, int]:
        """(layers whose outputs are pushed as skips: the first n; first layer that receives one). Receiver v
        pops the latest push, with weight index depth-1-v (golf) or v-first (skip_gates, the record's)."""
        if self.skip_weights is None:
            return 0, depth
        if self.skip_gates is not None:
            return depth // 2, depth // 2
        n = min(depth // 2, len(self.skip_weights))
        return n, depth - n

    def join_skip(self, x: torch.Tensor, skip: torch.Tensor, v: int, depth: int, first: int) -> torch.Tensor:
        if self.skip_gates is None:
            return x + self.skip_weights[depth - 1 - v].to(x.dtype) * skip
        j = v - first
        return torch.lerp(self.skip_weights[j].to(x.dtype) * skip, x, torch.sigmoid(self.skip_gates[j].to(x.dtype)))

    def forward(self, blocks: nn.ModuleList, x: torch.Tensor, x0: torch.Tensor, doc_ids=None) -> torch.Tensor:
        plan = self.plan()
        depth = len(plan)
        n_push, first_skip = self.skip_pairing(depth)
        last_skip = first_skip + (min(n_push, len(self.skip_weights)) if self.skip_weights is not None else 0)
        first_lane = depth - len(self.lanes)
        seg = self.end - self.start + 1
        skips, lanes, prelude_out = [], None, x
        for v, layer in enumerate(plan):
            with torch.set_grad_enabled(layer.grad and torch.is_grad_enabled()):
                if layer.loop_pass >= 0 and layer.block == self.start:
                    if layer.loop_pass == 0:
                        prelude_out = x
                    x = self.enter_pass(x, prelude_out)
                if v == first_lane:
                    lanes = (x, x)
                if first_skip <= v < last_skip:
                    if lanes is None:
                        x = self.join_skip(x, skips.pop(), v, depth, first_skip)
                    else:
                        lanes = (self.join_skip(lanes[0], skips.pop(), v, depth, first_skip), lanes[1])
                if lanes is None:
                    x = blocks[layer.block](x, x0, doc_ids)
                else:
                    lanes = blocks[layer.block].forward_lanes(lanes, x0, self.lanes[v - first_lane], doc_ids)
                if self.adapters is not None and layer.loop_pass >= 0:
                    p = min(layer.loop_pass, self.adapter_passes - 1)
                    x = self.adapters[p * seg + layer.block - self.start](x)
                if v < n_push:
                    skips.append(x)
        return x if lanes is None else (lanes[0] + lanes[1]) / 2


class SegmentLoop(LoopSchedule):
    """Fixed passes: `train_loops` in training (one pass until `loop_enable_at` of training), `eval_loops` at eval.
    Seed train_gpt2.py: LOOP_START=0 LOOP_END=2 TRAIN_LOOPS=8 EVAL_LOOPS=16 LOOP_ENABLE_AT=0 (3 blocks x 8, 16 at
    eval); the 2026-04-09 record: blocks 3-5, 3 passes from 35% of training on."""

    def __init__(self, cfg):
        super().__init__(cfg, grad_passes=max(cfg.train_loops, cfg.eval_loops), max_train_passes=cfg.train_loops)
        self.loops, self.enable_at = cfg.train_loops, cfg.loop_enable_at
        self.train_passes = 1 if self.enable_at > 0 else self.loops
        self.varying_graph = self.enable_at > 0 and self.loops > 1 and (
            self.adapters is not None or self.skip_weights is not None)

    def set_progress(self, step: int, frac: float) -> None:
        self.train_passes = self.loops if frac >= self.enable_at else 1


class Recurrence(LoopSchedule):
    """Recursive NanoChat (prelude / recur / coda, e.g. 2 / 4 / 2 blocks): passes sampled every optimiser step
    (mean TRAIN_LOOPS=4, sigma 0.5, capped at 16), gradients only through the last RECUR_BPTT passes, and each pass
    starts from inject([state, prelude output]), a concat-linear initialised to pass the state through."""

    def __init__(self, cfg):
        super().__init__(cfg, grad_passes=cfg.recur_bptt, max_train_passes=cfg.recur_max)
        self.seed, self.mean, self.sigma, self.cap = cfg.seed, cfg.train_loops, cfg.recur_sigma, cfg.recur_max
        d = cfg.model_dim
        self.inject = nn.Linear(2 * d, d, bias=False)  # weight (D, 2D) = [I | 0] at init
        with torch.no_grad():
            self.inject.weight.zero_()
            self.inject.weight[:, :d].copy_(torch.eye(d))
        self.varying_graph = self.adapters is not None or self.skip_weights is not None

    def set_progress(self, step: int, frac: float) -> None:
        self.train_passes = sample_passes(self.seed, step, self.mean, self.sigma, self.cap)

    def enter_pass(self, x: torch.Tensor, prelude_out: torch.Tensor) -> torch.Tensor:
        return self.inject(torch.cat((x, prelude_out), dim=-1))


LOOP_SCHEDULES = {"loop": SegmentLoop, "recurrent": Recurrence}
