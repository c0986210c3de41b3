"""Checkpoint and resume (golf/checkpoint.py): a run SIGKILLed mid-training and resumed ends with the uninterrupted
run's artifact, byte for byte; a broken or foreign checkpoint is one error line, exit 2, and stays as it was.

The runs are step-capped (ITERATIONS) under a wallclock far beyond them: golf's LR warmdown and loop start follow
max(time, step) progress (golf/optim.py lr_multiplier, golf/budget.py progress), so with 100,000 s of budget the time
terms stay at their plateau (LR multiplier 1, progress = step / ITERATIONS) and the trajectory depends on steps only.
A time-bounded run is not reproducible even uninterrupted; resume carries its elapsed training time over instead."""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from golf.checkpoint import read_manifest, resolve_resume
from golf.config import Config, GolfError
from golf.data import DistributedTokenLoader, write_shard

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 30


@pytest.fixture(scope="module")
def long_script(tmp_path_factory) -> Path:
    """train_gpt.py packed from recipe `long` (the one that packs the checkpoint code)."""
    out = tmp_path_factory.mktemp("long") / "train_gpt.py"
    subprocess.run([sys.executable, str(ROOT / "tools" / "pack.py"), "--recipe", "long", "-o", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    return out


def run_env(sample_data, **overrides) -> dict:
    # OUT_DIR "." with a run directory as cwd: runs in different directories have the same config, hence the same
    # artifact metadata. TTT off and 4K val tokens keep the evaluation after training short.
    env = dict(os.environ, PRESET="smoke", DATA_PATH=sample_data["data_path"],
               TOKENIZER_PATH=sample_data["tokenizer_path"], VOCAB_SIZE=str(sample_data["vocab_size"]),
               OUT_DIR=".", RUN_ID="t", ITERATIONS=str(ITERATIONS), MAX_WALLCLOCK_SECONDS="100000",
               QUANT_RESERVE_SECONDS="1000", MODEL_DIM="64", NUM_LAYERS="3", TRAIN_BATCH_TOKENS="4096",
               GRAD_ACCUM_STEPS="2", VAL_MAX_TOKENS="4096", TTT_ENABLED="0", CHECKPOINT_EVERY_SECONDS="0.5",
               PYTHONPATH=str(ROOT))
    env.update(overrides)
    return env


def command(script: Path, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]


def complete_checkpoints(run_dir: Path, min_step: int = 0) -> list[Path]:
    return [m for m in sorted((run_dir / "checkpoints").glob("step_*/manifest.json"))
            if int(m.parent.name.split("_")[1]) >= min_step]


def descendants(pid: int) -> list[int]:
    """Every live process below pid. torchrun starts each rank in a session of its own, so killing torchrun's
    process group would leave the ranks running."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child)] + descendants(int(child))
    return found


def run_killed_after_checkpoint(script: Path, run_dir: Path, env: dict, nproc: int, min_step: int) -> None:
    """Start a run; once a checkpoint of step >= min_step is complete, SIGKILL torchrun and every rank at once."""
    run_dir.mkdir()
    proc = subprocess.Popen(command(script, nproc), env=env, cwd=run_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not complete_checkpoints(run_dir, min_step) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    ranks = descendants(proc.pid)
    for pid in [proc.pid] + ranks:
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate()
    for pid in ranks:  # reaped by init once torchrun is gone: wait until each has vanished
        while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
            time.sleep(0.01)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill: {err.decode()[-2000:]}"
    assert complete_checkpoints(run_dir)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, long_script, sample_data) -> dict:
    """A 2-rank gloo run killed mid-training, and a pristine copy of its checkpoints taken right after the kill."""
    base = tmp_path_factory.mktemp("killed")
    run_dir = base / "run"
    run_killed_after_checkpoint(long_script, run_dir, run_env(sample_data), nproc=2, min_step=ITERATIONS // 3)
    log = (run_dir / "logs" / "t.txt").read_text()
    # killed while training (the log also holds the file's source, whose f-string has the words "stopped step:")
    assert not re.search(r"^stopped step:\d", log, re.M) and not (run_dir / "final_model.golf").exists()
    shutil.copytree(run_dir / "checkpoints", base / "pristine")
    return {"run_dir": run_dir, "pristine": base / "pristine"}


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted_artifact(tmp_path, long_script, sample_data, killed_run):
    whole = tmp_path / "whole"
    whole.mkdir()
    proc = subprocess.run(command(long_script, 2), env=run_env(sample_data), cwd=whole, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    run_dir = killed_run["run_dir"]
    proc = subprocess.run(command(long_script, 2), env=run_env(sample_data, RESUME="latest"), cwd=run_dir,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "logs" / "t.txt").read_text()
    resumed = re.search(r"^resumed from:(.*)$", log, re.M).group(1)  # the line, not the logged source's f-string
    resumed_at = int(resumed.split("step:")[1].split()[0])
    assert ITERATIONS // 3 <= resumed_at < ITERATIONS
    # The training clock goes on from the checkpoint's elapsed time.
    carried_ms = int(resumed.split("train_time:")[1].rstrip("ms"))
    final_ms = int(re.findall(r"^stopped step:\d+ train_time:(\d+)ms", log, re.M)[-1])
    assert 0 < carried_ms < final_ms
    assert f"stopped step:{ITERATIONS} " in log
    # Each new checkpoint removed the one before it once complete.
    assert len(re.findall(r"^checkpoint:", log, re.M)) > 2 and len(list((run_dir / "checkpoints").glob("step_*"))) == 1
    assert (run_dir / "final_model.golf").read_bytes() == (whole / "final_model.golf").read_bytes()


def resume_fails(script: Path, checkpoints: Path, run_dir: Path, env: dict, needle: str) -> None:
    """A 1-process RESUME of `checkpoints` ends in one stderr line holding `needle`, exit 2, checkpoints untouched."""
    run_dir.mkdir()
    shutil.copytree(checkpoints, run_dir / "checkpoints")
    before = tree(run_dir / "checkpoints")
    proc = subprocess.run(command(script, 1), env=dict(env, RESUME="latest"), cwd=run_dir, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and needle in lines[0], lines
    assert tree(run_dir / "checkpoints") == before


def newest(checkpoints: Path) -> Path:
    return sorted(checkpoints.glob("step_*/manifest.json"))[-1].parent


def test_truncated_checkpoint_file_is_named(tmp_path, long_script, sample_data, killed_run):
    broken = tmp_path / "broken"
    shutil.copytree(killed_run["pristine"], broken)
    rank0 = newest(broken) / "rank_0.pt"
    rank0.write_bytes(rank0.read_bytes()[:-100])
    resume_fails(long_script, broken, tmp_path / "run", run_env(sample_data), f"{newest(broken).name}/rank_0.pt: ")


def test_flipped_byte_fails_the_checksum(tmp_path, long_script, sample_data, killed_run):
    broken = tmp_path / "broken"
    shutil.copytree(killed_run["pristine"], broken)
    rank1 = newest(broken) / "rank_1.pt"
    data = bytearray(rank1.read_bytes())
    data[len(data) // 2] ^= 0x01
    rank1.write_bytes(bytes(data))
    resume_fails(long_script, broken, tmp_path / "run", run_env(sample_data), "rank_1.pt: sha256 differs")


def test_another_config_is_refused(tmp_path, long_script, sample_data, killed_run):
    resume_fails(long_script, killed_run["pristine"], tmp_path / "run", run_env(sample_data, MATRIX_LR="0.03"),
                 "MATRIX_LR=0.026 there, 0.03 here")


def test_another_world_size_is_refused(tmp_path, long_script, sample_data, killed_run):
    resume_fails(long_script, killed_run["pristine"], tmp_path / "run", run_env(sample_data),
                 "written by 2 ranks, this run has 1")


def test_another_recipe_is_refused(tmp_path, sample_data, killed_run):
    resume_fails(ROOT / "golf" / "train.py", killed_run["pristine"], tmp_path / "run",
                 run_env(sample_data, CHECKPOINTING="on"), "written by recipe 'long'")


def test_default_pack_carries_no_checkpoint_code_and_says_how_to_get_it(tmp_path, sample_data):
    from tools.pack import pack_source
    import dataclasses
    from golf.recipes import RECIPES

    default = pack_source(ROOT, "default", dataclasses.asdict(RECIPES["default"]))
    long = pack_source(ROOT, "long", dataclasses.asdict(RECIPES["long"]))
    for name in ("class Checkpointer", "def read_manifest", "def write_synced"):
        assert name not in default and name in long
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.run(command(ROOT / "train_gpt.py", 1), env=run_env(sample_data), cwd=run_dir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--recipe long" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_loader_state_continues_the_stream_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_shard(str(tmp_path / f"x_train_{i:06d}.bin"), rng.integers(0, 1000, 700, dtype=np.uint16))
    paths = sorted(str(p) for p in tmp_path.glob("*.bin"))
    loader = DistributedTokenLoader(paths, rank=1, world_size=2)
    for _ in range(3):
        loader.next_batch(256, 64, 1)  # 3 x 2 x 129 tokens: into the second shard
    state = loader.state_dict()
    assert state["shard_index"] == 1
    expected = [loader.next_batch(256, 64, 1) for _ in range(4)]  # crosses into the third shard
    fresh = DistributedTokenLoader(paths, rank=1, world_size=2)
    fresh.load_state_dict(state)
    for (x, y), (ex, ey) in zip((fresh.next_batch(256, 64, 1) for _ in range(4)), expected):
        assert x.equal(ex) and y.equal(ey)


def test_resume_latest_without_a_complete_checkpoint_names_the_directory(tmp_path):
    (tmp_path / "checkpoints" / "step_0000004").mkdir(parents=True)  # killed before its manifest
    with pytest.raises(GolfError, match=r"checkpoints: RESUME=latest found no complete checkpoint"):
        resolve_resume("latest", str(tmp_path))


def test_unreadable_manifest_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": 1, "files": ')
    with pytest.raises(GolfError, match=r"manifest.json: unreadable checkpoint manifest"):
        read_manifest(str(tmp_path), Config(), 1)


def test_loader_refuses_the_state_of_other_shards(tmp_path):
    write_shard(str(tmp_path / "a_train_000000.bin"), np.arange(600, dtype=np.uint16))
    write_shard(str(tmp_path / "b_train_000000.bin"), np.arange(600, dtype=np.uint16))
    state = DistributedTokenLoader([str(tmp_path / "a_train_000000.bin")], 0, 1).state_dict()
    with pytest.raises(GolfError, match=r"read 1 shards \(a_train_000000.bin, \.\.\.\), this run 1 others"):
        DistributedTokenLoader([str(tmp_path / "b_train_000000.bin")], 0, 1).load_state_dict(state)


def test_save_then_resume_in_process_restores_state_and_keeps_writing_off_the_clock(tmp_path):
    """One process: a checkpoint of a tiny model, AdamW and EMA, then a fresh set resumed from it."""
    import torch

    from golf.budget import WallclockBudget
    from golf.checkpoint import Checkpointer
    from golf.dist import DistEnv
    from golf.optim import WeightEMA

    write_shard(str(tmp_path / "x_train_000000.bin"), np.arange(5000, dtype=np.uint16) % 97)
    cfg = Config(out_dir=str(tmp_path), checkpointing="on", checkpoint_every_seconds=1.0, device="cpu")
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    lines = []

    def live():
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        loader = DistributedTokenLoader([str(tmp_path / "x_train_000000.bin")], 0, 1)
        return model, WeightEMA(model, 0.5), [opt], loader, WallclockBudget(cfg, env.device)

    model, ema, opts, loader, budget = live()
    saver = Checkpointer(cfg, env, lines.append)
    assert saver.start(model, ema, opts, loader, budget) == 0
    budget.start("train")
    for _ in range(2):
        model(torch.randn(2, 4)).sum().backward()
        opts[0].step()
        ema.update()
        loader.next_batch(128, 64, 1)
    budget.train_elapsed = 1.5  # past the first mark
    t0 = budget.train_t0
    saver.after_step(2, stop=False)
    assert budget.train_t0 > t0  # the write is taken off the training clock
    assert saver.next_at == 2.5 and lines[-1].startswith("checkpoint:")
    budget.train_elapsed = 2.6
    saver.after_step(3, stop=True)  # the step a run stops at writes nothing
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002"]
    expected = (torch.rand(3), model(torch.ones(1, 4)), ema.shadow[0].clone(), loader.next_batch(128, 64, 1)[0])

    model2, ema2, opts2, loader2, budget2 = live()  # a new init: other weights, and the RNG moved on
    resumer = Checkpointer(dataclasses.replace(cfg, resume="latest"), env, lines.append)
    budget2.start("train")
    assert resumer.start(model2, ema2, opts2, loader2, budget2) == 2
    assert budget2.train_elapsed == 1.5 and lines[-1].startswith("resumed from:")
    assert budget2.tick() is False and budget2.train_elapsed >= 1.5  # the clock goes on from the checkpoint
    assert torch.rand(3).equal(expected[0])
    assert model2(torch.ones(1, 4)).equal(expected[1]) and ema2.shadow[0].equal(expected[2])
    assert opts2[0].state_dict()["state"][0]["exp_avg"].equal(opts[0].state_dict()["state"][0]["exp_avg"])
    assert loader2.next_batch(128, 64, 1)[0].equal(expected[3])
