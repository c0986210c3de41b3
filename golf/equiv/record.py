"""Load an upstream record's train_gpt.py on CPU as a module, without running its main (tools/equiv.py).

Not packed: the record's code is read at run time from the user's upstream checkout, never copied into golf.

What load_record does, in order:
- reads the log's `Hyperparameters:` block (default log: the sibling `train_seed42.log`) into a dict of strings;
- sets the env the record's `Hyperparameters` class reads (its `os.environ.get("NAME", ...)` names) from those
  values, only while the module loads; run-time keys (rank, world size: torchrun's) are left out, so the module
  loads single-process;
- puts a CPU stand-in for FA3 (`flash_attn_interface`) in sys.modules for the load only; the stand-in runs
  torch's SDPA, causal, and for the varlen call restricts attention to each `cu_seqlens` segment;
- makes `torch.compile` the identity during the load (the record decorates its Newton-Schulz with it), so
  nothing compiles;
- imports the file from a temp dir copy under a unique module name, then restores sys.modules and the env.
`without_pinned_memory` lets its loaders run on a CPU-only torch. The CUDA-only paths stay off through the record's
own switches: `record_hparams` sets `fused_ce_enabled=False`
(its eager softcapped CE) and `record_gpt` sets every `MLP.use_fused = False` (its eager LeakyReLU^2 MLP);
`BOS_ID` is set to 1, the value its loaders set (R:638).
"""

import ast
import contextlib
import importlib.util
import itertools
import os
import re
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from golf.config import GolfError

# Log-header keys that describe the launch (torchrun's env), not the recipe: never exported to the load's env.
RUNTIME_KEYS = ("rank", "world_size", "local_rank", "distributed", "is_main_process")
HEADER_LINE = re.compile(r"^  (\w+): (.*)$")
ENV_READ = re.compile(r"^\s+(\w+) = .*?os\.environ\.get\(\s*\"(\w+)\"", re.M)
_load_count = itertools.count()


@dataclass
class RecordHandle:
    module: types.ModuleType  # the record's train_gpt.py, imported on CPU
    hparams: dict[str, str]  # the log header: key -> printed value
    path: Path  # the record's train_gpt.py
    log: Path  # the log the header came from
    env: dict[str, str]  # the env the module loaded under (header values under the record's env names)


def read_header(log: Path) -> dict[str, str]:
    """The `Hyperparameters:` block of a record's log (its main prints `  key: value` per field, sorted)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise GolfError(f"{log}: cannot read the record's log: {e.strerror or e}") from None
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Hyperparameters:")
    except StopIteration:
        raise GolfError(f"{log}: no 'Hyperparameters:' header (not a record's train log); "
                        "give the seed log with --log") from None
    header = {}
    for line in lines[start + 1:]:
        m = HEADER_LINE.match(line)
        if not m:
            break
        header[m.group(1)] = m.group(2)
    if not header:
        raise GolfError(f"{log}: the 'Hyperparameters:' header lists no values")
    return header


def env_names(source: str) -> dict[str, str]:
    """Hyperparameters field -> the env name the record's class body reads it from (`x = f(os.environ.get("X"...`)."""
    body = class_source(source, "Hyperparameters")
    return {field: env for field, env in ENV_READ.findall(body)}


def class_source(source: str, name: str) -> str:
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return ast.get_source_segment(source, node)
    raise GolfError(f"no class {name} in the record's train_gpt.py")


def env_value(printed: str) -> str:
    """A header value as the record's env parsing wants it: its bools are read by bool(int(...))."""
    return {"True": "1", "False": "0"}.get(printed, printed)


def header_env(header: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    return {names[k]: env_value(v) for k, v in header.items() if k in names and k not in RUNTIME_KEYS}


@contextlib.contextmanager
def patched_env(env: dict[str, str]):
    """os.environ = the caller's env with torchrun's launch variables removed and `env` set; restored after."""
    saved = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def segment_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Per position, the index of its cu_seqlens segment (padding entries equal total: empty segments)."""
    return torch.searchsorted(cu_seqlens.to(torch.int64), torch.arange(total, dtype=torch.int64), right=True)


def sdpa_bthd(q, k, v, mask=None):
    """FA3 layout (B, T, H, D) through torch SDPA; GQA by repeating kv heads; scale D^-0.5 (FA3's default)."""
    group = q.size(-2) // k.size(-2)
    k = k.repeat_interleave(group, dim=-2)
    v = v.repeat_interleave(group, dim=-2)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=mask, is_causal=mask is None)
    return y.transpose(1, 2)


def flash_attn_func(q, k, v, causal=True, **_):
    if not causal:
        raise NotImplementedError("the CPU FA3 stand-in runs causal attention only (all the record calls)")
    return sdpa_bthd(q, k, v)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=0, max_seqlen_k=0, causal=True,
                           window_size=(-1, -1), **_):
    """q (T, H, D), k/v (T, Hkv, D): causal attention within each cu_seqlens segment (FA3 varlen semantics)."""
    if not causal or tuple(window_size) != (-1, -1) or not torch.equal(cu_seqlens_q, cu_seqlens_k):
        raise NotImplementedError("the CPU FA3 stand-in runs causal, unwindowed, self-attention varlen only")
    total = q.size(0)
    seg = segment_ids(cu_seqlens_q, total)
    pos = torch.arange(total)
    mask = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])
    return sdpa_bthd(q[None], k[None], v[None], mask)[0]


def fa3_stand_in() -> types.ModuleType:
    mod = types.ModuleType("flash_attn_interface")
    mod.flash_attn_func = flash_attn_func
    mod.flash_attn_varlen_func = flash_attn_varlen_func
    return mod


@contextlib.contextmanager
def load_patches():
    """FA3 stand-in in sys.modules and torch.compile as the identity, for the import only."""
    saved_fa3 = sys.modules.get("flash_attn_interface")
    saved_compile = torch.compile

    def no_compile(fn=None, *args, **kwargs):
        return fn if fn is not None else (lambda f: f)

    sys.modules["flash_attn_interface"] = fa3_stand_in()
    torch.compile = no_compile
    try:
        yield
    finally:
        torch.compile = saved_compile
        if saved_fa3 is None:
            sys.modules.pop("flash_attn_interface", None)
        else:
            sys.modules["flash_attn_interface"] = saved_fa3


@contextlib.contextmanager
def without_pinned_memory():
    """The record's loaders pin their batches for CUDA copies (R:669-676); a CPU-only torch has no pinned
    allocator, so while this is active `pin_memory` is a no-op (the same tensors, unpinned)."""
    saved_empty, saved_pin = torch.empty, torch.Tensor.pin_memory

    def empty(*args, pin_memory=False, **kwargs):
        return saved_empty(*args, **kwargs)

    torch.empty = empty
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.empty, torch.Tensor.pin_memory = saved_empty, saved_pin


def check_record_source(path: Path) -> str:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GolfError(f"{path}: cannot read the record's train_gpt.py: {getattr(e, 'strerror', None) or e}") from None
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise GolfError(f"{path}: not Python ({e.msg}, line {e.lineno})") from None
    names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    missing = [n for n in ("Hyperparameters", "GPT", "main") if n not in names]
    if missing:
        raise GolfError(f"{path}: not a record's train_gpt.py (no {', '.join(missing)})")
    return source


def load_record(train_gpt: Path, log: Path | None = None) -> RecordHandle:
    """The record's train_gpt.py imported on CPU under its log header's env; its main never runs."""
    train_gpt = Path(train_gpt)
    log = Path(log) if log is not None else train_gpt.with_name("train_seed42.log")
    source = check_record_source(train_gpt)
    header = read_header(log)
    env = header_env(header, env_names(source))
    name = f"golf_equiv_record_{next(_load_count)}"
    with tempfile.TemporaryDirectory(prefix="golf-equiv-") as tmp:
        copy = Path(tmp) / "train_gpt.py"
        shutil.copyfile(train_gpt, copy)
        spec = importlib.util.spec_from_file_location(name, copy)
        module = importlib.util.module_from_spec(spec)
        cwd = os.getcwd()
        with patched_env(env), load_patches():
            os.chdir(tmp)  # anything the import writes lands in the temp dir
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                raise GolfError(f"{train_gpt}: the record did not import on CPU: {type(e).__name__}: {e}") from None
            finally:
                os.chdir(cwd)
    module.BOS_ID = 1  # what its loaders and evals set before first use (R:638)
    return RecordHandle(module=module, hparams=header, path=train_gpt, log=log, env=env)


def record_hparams(rec: RecordHandle, **overrides):
    """A fresh instance of the record's Hyperparameters under the header env plus `overrides` (field=value).

    The class reads the env in its body, so the body is executed again in the module's namespace. Overrides are
    given by field name and set through the record's own env name; the fused CE kernel is off (fused_ce_enabled).
    """
    source = rec.path.read_text(encoding="utf-8")
    names = env_names(source)
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise GolfError(f"{rec.path}: Hyperparameters reads no env for {', '.join(unknown)}")
    values = {"fused_ce_enabled": False, **overrides}
    env = dict(rec.env)
    env.update({names[k]: env_value(str(v)) if not isinstance(v, bool) else str(int(v)) for k, v in values.items()})
    namespace = dict(vars(rec.module))
    with patched_env(env):
        exec(compile(class_source(source, "Hyperparameters"), str(rec.path), "exec"), namespace)
    return namespace["Hyperparameters"]()


def record_gpt(rec: RecordHandle, h) -> torch.nn.Module:
    """The record's GPT for hparams `h`, float32 on CPU, on its eager (non-Triton) MLP path."""
    model = rec.module.GPT(h).float()
    for block in model.blocks:
        block.mlp.use_fused = False
    return model
