"""Two gloo processes on CPU: same weights as one process with grad accumulation, same stop step on both ranks."""

import dataclasses
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from golf.budget import WallclockBudget
from golf.dist import teardown_dist
from golf.model.gpt import GPT
from golf.optim import WeightEMA, build_optimizers
from golf.params import assign_rules, param_rules
from golf.step import train_step
from tests.test_model import TINY

# Default recipe pieces (loop enabled partway, U-Net skips, two-lane coda, MuonEq-R, EMA) at toy size;
# 2 rows of 16 tokens per rank per micro-batch.
DIST_CFG = dataclasses.replace(TINY, train_batch_tokens=4 * 16, loop_enable_at=0.5, ema_decay=0.9)
STEPS = 4


class SyntheticLoader:
    """Global batch of step s is a fixed function of s; rank r's micro-batch m is chunk r * grad_accum + m of it."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size, self.calls = rank, world_size, 0

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum: int):
        step, micro = divmod(self.calls, grad_accum)
        self.calls += 1
        rows = global_tokens // seq_len
        tokens = torch.randint(0, 64, (rows, seq_len + 1), generator=torch.Generator().manual_seed(step))
        chunk = tokens.chunk(self.world_size * grad_accum)[self.rank * grad_accum + micro]
        return chunk[:, :-1], chunk[:, 1:]


def train_tiny(rank: int, world_size: int, grad_accum: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(DIST_CFG)
    opts = build_optimizers(model, assign_rules(model.named_parameters(), param_rules(DIST_CFG)), DIST_CFG)
    ema = WeightEMA(model, DIST_CFG.ema_decay)
    net = model
    if world_size > 1:
        net = DistributedDataParallel(model, find_unused_parameters=model.schedule.varying_graph)
    loader = SyntheticLoader(rank, world_size)
    for step in range(STEPS):
        model.set_progress(step, step / STEPS)  # the middle block starts looping at step 2
        train_step(net, loader, opts, DIST_CFG, grad_accum, torch.device("cpu"), ema)
    ema.copy_to_model()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def init_gloo(rank: int, world_size: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'rendezvous')}", rank=rank,
                            world_size=world_size)


def ddp_worker(rank: int, world_size: int, tmp: str) -> None:
    init_gloo(rank, world_size, tmp)
    state = train_tiny(rank, world_size, grad_accum=1)
    torch.save(state, os.path.join(tmp, f"state{rank}.pt"))
    teardown_dist()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_grad_accumulation(tmp_path):
    mp.spawn(ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = train_tiny(0, 1, grad_accum=2)
    for rank in range(2):
        state = torch.load(tmp_path / f"state{rank}.pt")
        for name, value in single.items():
            assert torch.allclose(state[name], value, atol=1e-5, rtol=1e-4), (rank, name)
    assert not torch.equal(single["blocks.1.mlp.fc.weight"], GPT(DIST_CFG).state_dict()["blocks.1.mlp.fc.weight"])


def stop_worker(rank: int, world_size: int, tmp: str) -> None:
    init_gloo(rank, world_size, tmp)
    cfg = dataclasses.replace(TINY, max_wallclock_seconds=2.0, quant_reserve_seconds=0.0)
    budget = WallclockBudget(cfg, torch.device("cpu"))
    if rank == 1:
        time.sleep(0.3)  # rank 1's clock starts late: on its own it would train ~0.3 s (many steps) longer
    budget.start("train")
    step = 0
    while True:
        time.sleep(0.01 if rank == 0 else 0.03)  # and rank 1 is the slower one per step
        step += 1
        local = time.perf_counter() - budget.train_t0
        if budget.tick():
            break
    torch.save(dict(step=step, elapsed=budget.train_elapsed, local=local), os.path.join(tmp, f"stop{rank}.pt"))
    teardown_dist()


@pytest.mark.slow
def test_ranks_stop_on_the_same_step(tmp_path):
    mp.spawn(stop_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"stop{rank}.pt") for rank in range(2))
    # Both stop on the step before the agreed clock would cross 2.0 s (steps take ~0.03 s on the slower rank).
    assert r0["step"] == r1["step"] and 1.85 <= r0["elapsed"] == r1["elapsed"] < 2.0
    assert r1["local"] < 1.8  # rank 1 stopped on the agreed (slowest) clock, not its own


def muon_run(rank: int, world_size: int, sharded: bool) -> tuple[list[torch.Tensor], int]:
    """3 MuonEq-R steps on 5 matrices of 2 shapes (so the shards are uneven), gradients a fixed function of the
    step (identical on every rank, as after DDP's all-reduce); one matrix has no gradient on step 1."""
    from golf.optim import MuonEqR, polar_express

    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in [(16, 8)] * 3 + [(8, 24)] * 2]
    opt = MuonEqR(params, lr=0.05, momentum=0.9, ns_steps=5, weight_decay=0.1, orthogonalize=polar_express,
                  sharded=sharded)
    for step in range(3):
        for i, p in enumerate(params):
            p.grad = None if (step, i) == (1, 2) else torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in params], len(opt.state)  # momentum buffers this rank keeps


def sharded_muon_worker(rank: int, world_size: int, tmp: str) -> None:
    init_gloo(rank, world_size, tmp)
    torch.save(muon_run(rank, world_size, sharded=True), os.path.join(tmp, f"muon{rank}.pt"))
    teardown_dist()
    # Once in ~5 suite runs (2026-12-04) a rank aborted at interpreter exit, after its result was saved and the
    # group torn down ("terminate called without an active exception": a gloo thread destroyed at exit). The test
    # checks the saved results; leave without running C++ destructors.
    os._exit(0)


@pytest.mark.slow
def test_sharded_muon_on_two_gloo_processes_equals_one_process(tmp_path):
    mp.spawn(sharded_muon_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single, single_states = muon_run(0, 1, sharded=True)  # no process group: every matrix orthogonalised here
    assert single_states == 5
    owned = []
    for rank in range(2):
        params, states = torch.load(tmp_path / f"muon{rank}.pt")
        owned.append(states)
        for got, want in zip(params, single):
            assert torch.equal(got, want), rank  # bit for bit: each update is computed once, by its owner
    assert owned == [3, 2]  # shape (16, 8): ranks 0, 1, 0; shape (8, 24): ranks 0, 1
