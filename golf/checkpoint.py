"""Checkpoint and resume: every rank's training state written atomically while training, and a run continued from it.

CHECKPOINTING=on picks Checkpointer; the default "off" picks NoCheckpoints, so the record track's packed file carries
none of the writing and reading code (tools/pack.py keeps only the chosen entry of CHECKPOINTERS; recipe `long`
packs it).

Layout under <OUT_DIR>/checkpoints/:
  step_NNNNNNN/rank_R.pt       one per rank (torch.save): its optimiser state (Muon keeps only the momentum of the
                               matrices this rank orthogonalises), loader position and RNG states; rank 0's also holds
                               the weights and the EMA (they are the same on every rank)
  step_NNNNNNN/manifest.json   written last, by rank 0, once every rank's file is on disk: step, elapsed training
                               time, world size, recipe, config and its fingerprint, each rank file's size and sha256
A directory without a manifest is incomplete and never resumed from. The previous complete checkpoint is removed only
after the next one's manifest is on disk.
"""

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import time

import torch
import torch.distributed as dist

from golf.config import RECIPE, GolfError
from golf.data import write_bytes_atomic

CHECKPOINT_FORMAT = 1
MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"step_(\d+)$")
# Settings that steer the run without changing its trajectory: a resumed run may set them differently.
RUN_CONTROL_FIELDS = ("resume", "checkpoint_every_seconds", "out_dir", "run_id", "train_log_every")


class NoCheckpoints:
    """CHECKPOINTING=off: nothing is written or read."""

    def __init__(self, cfg, env, log):
        if cfg.checkpoint_every_seconds > 0 or cfg.resume:
            raise GolfError("CHECKPOINT_EVERY_SECONDS / RESUME need CHECKPOINTING=on, in a file packed with it "
                            "(python tools/pack.py --recipe long)")

    def start(self, *live) -> int:
        return 0

    def after_step(self, step: int, stop: bool) -> None:
        pass


def config_fingerprint(cfg) -> tuple[dict, str]:
    """(the config fields that decide the trajectory, sha256 of their canonical JSON)."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_CONTROL_FIELDS}
    return fields, hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def write_synced(path: str, data: bytes) -> None:
    """write_bytes_atomic, durable, then fsync the directory: path is whole or absent, also after a crash."""
    write_bytes_atomic(path, data, durable=True)
    fsync_dir(os.path.dirname(path))


def fsync_dir(directory: str) -> None:
    """Make a rename or a new entry in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def step_dirs(root: str) -> list[tuple[int, str]]:
    """(step, path) of every step_N directory under root, oldest first."""
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root) if (m := STEP_DIR.match(name))]
    return sorted(found)


def resolve_resume(resume: str, out_dir: str) -> str:
    """RESUME=latest: the newest step directory with a manifest under <out_dir>/checkpoints; else RESUME is one."""
    if resume != "latest":
        return resume
    root = os.path.join(out_dir, "checkpoints")
    complete = [path for _, path in step_dirs(root) if os.path.isfile(os.path.join(path, MANIFEST))]
    if not complete:
        raise GolfError(f"{root}: RESUME=latest found no complete checkpoint (step_N/{MANIFEST}); "
                        "start without RESUME")
    return complete[-1]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: str, cfg, world_size: int) -> dict:
    """The checkpoint's manifest once the checkpoint is whole (every file's size and sha256) and made by this
    config, recipe and world size; any other checkpoint is a GolfError naming the file."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise GolfError(f"{path}: no checkpoint manifest (an incomplete or foreign directory); "
                        "give RESUME a step_N directory holding one, or RESUME=latest")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        fmt = manifest["format"]
        files = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in manifest["files"].items()}
        step, elapsed = int(manifest["step"]), float(manifest["train_elapsed"])
        fields, fingerprint, recipe, world = (manifest["config"], manifest["config_sha256"], manifest["recipe"],
                                              manifest["world_size"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise GolfError(f"{path}: unreadable checkpoint manifest ({type(e).__name__}: {e})") from None
    if fmt != CHECKPOINT_FORMAT:
        raise GolfError(f"{path}: checkpoint format {fmt}, this build reads {CHECKPOINT_FORMAT}")
    for name, (expected_bytes, sha256) in sorted(files.items()):
        file = os.path.join(directory, name)
        size = os.path.getsize(file) if os.path.isfile(file) else None
        if size is None:
            raise GolfError(f"{file}: missing; the checkpoint is incomplete")
        if size != expected_bytes:
            raise GolfError(f"{file}: {size} bytes, the manifest says {expected_bytes}: truncated or overwritten")
        if sha256_file(file) != sha256:
            raise GolfError(f"{file}: sha256 differs from the manifest's: the file is corrupt")
    if recipe != RECIPE:
        raise GolfError(f"{path}: written by recipe {recipe!r}, this file runs {RECIPE!r}; resume with the same file")
    ours, our_fingerprint = config_fingerprint(cfg)
    if fingerprint != our_fingerprint:
        diff = [k for k in sorted(set(ours) | set(fields)) if ours.get(k) != fields.get(k)]
        shown = ", ".join(f"{k.upper()}={fields.get(k)!r} there, {ours.get(k)!r} here" for k in diff[:3])
        raise GolfError(f"{path}: written by another config ({shown or 'fingerprint differs'}); "
                        "resume with the run's settings")
    if world != world_size or set(files) != {f"rank_{r}.pt" for r in range(world_size)}:
        raise GolfError(f"{path}: written by {world} ranks, this run has {world_size}; resume with "
                        f"--nproc_per_node={world}")
    return {"step": step, "train_elapsed": elapsed, "directory": directory}


class Checkpointer:
    """CHECKPOINTING=on: a checkpoint every CHECKPOINT_EVERY_SECONDS of training time (its own writing time is
    taken off the training clock), and RESUME continues from one. The RESUME checkpoint is checked on construction,
    before anything is trained or written."""

    def __init__(self, cfg, env, log):
        self.env, self.log = env, log
        self.every = cfg.checkpoint_every_seconds
        self.root = os.path.join(cfg.out_dir, "checkpoints")
        self.manifest_fields = dict(zip(("config", "config_sha256"), config_fingerprint(cfg)))
        self.resume_from = read_manifest(resolve_resume(cfg.resume, cfg.out_dir), cfg, env.world_size) \
            if cfg.resume else None
        self.next_at = self.every

    def start(self, model, ema, opts, loader, budget) -> int:
        """Bind the live training state (ema: WeightEMA or None; loader: state_dict() / load_state_dict()); with
        RESUME, load the checkpoint into it and set the just-started training clock to the checkpoint's elapsed
        time (loading is not training). Returns the step to continue from (0 without RESUME)."""
        self.model, self.ema, self.opts, self.loader, self.budget = model, ema, opts, loader, budget
        if self.resume_from is None:
            return 0
        t0 = time.perf_counter()
        directory = self.resume_from["directory"]
        own = self.load(os.path.join(directory, f"rank_{self.env.rank}.pt"))
        shared = own if self.env.rank == 0 else self.load(os.path.join(directory, "rank_0.pt"))
        model.load_state_dict(shared["model"])
        if ema is not None:
            for shadow, saved in zip(ema.shadow, shared["ema"]):
                shadow.copy_(saved)
        for opt, saved in zip(opts, own["optimizers"]):
            opt.load_state_dict(saved)
        loader.load_state_dict(own["loader"])
        torch.set_rng_state(own["rng"]["torch"].cpu())
        if self.env.device.type == "cuda":
            torch.cuda.set_rng_state(own["rng"]["cuda"].cpu(), self.env.device)
        budget.train_elapsed = self.resume_from["train_elapsed"]
        budget.shift_train_clock(time.perf_counter() - t0 - budget.train_elapsed)
        self.next_at = budget.train_elapsed + self.every
        self.log(f"resumed from:{directory} step:{self.resume_from['step']} "
                 f"train_time:{budget.train_elapsed * 1000:.0f}ms")
        return self.resume_from["step"]

    def load(self, path: str) -> dict:
        try:
            return torch.load(path, map_location=self.env.device, weights_only=True)
        except Exception as e:  # the checksum matched, so the writer itself stored something unreadable
            raise GolfError(f"{path}: unreadable checkpoint file ({type(e).__name__}: {e})") from None

    def after_step(self, step: int, stop: bool) -> None:
        """Write a checkpoint when the training clock has passed the next mark. train_elapsed is the same on every
        rank (golf/budget.py tick), so every rank decides alike and meets the others in the gather. Nothing is
        written after the step the run stops at: a resumed run would take one step more."""
        if self.every <= 0 or stop or self.budget.train_elapsed < self.next_at:
            return
        t0 = time.perf_counter()
        self.save(step)
        self.budget.shift_train_clock(time.perf_counter() - t0)
        self.next_at = self.budget.train_elapsed + self.every

    def save(self, step: int) -> None:
        directory = os.path.join(self.root, f"step_{step:07d}")
        os.makedirs(directory, exist_ok=True)
        fsync_dir(self.root)
        payload = {"optimizers": [opt.state_dict() for opt in self.opts], "loader": self.loader.state_dict(),
                   "rng": {"torch": torch.get_rng_state()}}
        if self.env.device.type == "cuda":
            payload["rng"]["cuda"] = torch.cuda.get_rng_state(self.env.device)
        if self.env.rank == 0:
            payload["model"] = self.model.state_dict()
            payload["ema"] = self.ema.shadow if self.ema is not None else []
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        name = f"rank_{self.env.rank}.pt"
        write_synced(os.path.join(directory, name), data)
        entry = (name, {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        entries = [entry] * self.env.world_size
        if self.env.world_size > 1:  # returns once every rank's file is renamed into place
            dist.all_gather_object(entries, entry)
        if self.env.rank != 0:
            return
        manifest = {"format": CHECKPOINT_FORMAT, "step": step, "train_elapsed": self.budget.train_elapsed,
                    "world_size": self.env.world_size, "recipe": RECIPE, **self.manifest_fields,
                    "files": dict(entries)}
        write_synced(os.path.join(directory, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())
        self.log(f"checkpoint:{directory} step:{step} train_time:{self.budget.train_elapsed * 1000:.0f}ms")
        for _, old in step_dirs(self.root):
            if old != directory:
                shutil.rmtree(old)


CHECKPOINTERS = {"off": NoCheckpoints, "on": Checkpointer}
