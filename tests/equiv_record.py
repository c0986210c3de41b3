"""Where tests find the 1.0611 record's folder (train_gpt.py, logs), and altered copies of its train_gpt.py.

The folder is read, never copied into golf (MIT, upstream's). Looked up in $GOLF_RECORD_DIR, then
../shared/upstream/<folder> beside the checkout, then /work/shared/upstream/<folder>; tests skip without it.
"""

import os
from pathlib import Path

import pytest
import torch

FOLDER = "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
ROOT = Path(__file__).resolve().parents[1]


def record_dir() -> Path | None:
    candidates = [os.environ.get("GOLF_RECORD_DIR"), ROOT.parent / "shared" / "upstream" / FOLDER,
                  Path("/work/shared/upstream") / FOLDER]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train_gpt.py").is_file():
            return Path(candidate)
    return None


needs_record = pytest.mark.skipif(record_dir() is None, reason=f"the record folder {FOLDER} is absent "
                                  "(set GOLF_RECORD_DIR, or put it at ../shared/upstream/)")


def altered_copy(tmp_path: Path, old: str, new: str) -> Path:
    """The record's train_gpt.py with `old` (which must occur exactly once) replaced by `new`, in tmp_path."""
    source = (record_dir() / "train_gpt.py").read_text(encoding="utf-8")
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times in the record"
    path = tmp_path / "train_gpt.py"
    path.write_text(source.replace(old, new), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """As tools/equiv.py runs the pieces: one intra-op thread (small tensors; a second thread only spins)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
