"""One comparison result per piece, as tools/equiv.py prints it: `PASS|FAIL|DEVIATION <piece> max_abs max_rel <detail>`.

A piece compares golf's output (ours) with the record's (theirs) for the same inputs. Equal within the stated
tolerance is PASS; unequal is FAIL unless the piece names a declared deviation (golf/recipes.py DEVIATIONS), then
DEVIATION with the table's reason. Equal although a deviation is declared is still PASS (the table is stale, and
tools/equiv.py says so in the detail).
"""

from dataclasses import dataclass

import torch

STATUSES = ("PASS", "FAIL", "DEVIATION")


@dataclass
class Piece:
    name: str
    status: str  # "PASS" | "FAIL" | "DEVIATION"
    max_abs: float
    max_rel: float
    detail: str
    reason: str = ""

    def line(self) -> str:
        text = f"{self.status:<9} {self.name} max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} {self.detail}"
        return f"{text} -- {self.reason}" if self.reason else text

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "detail": self.detail, "reason": self.reason}


def as_tensor(x) -> torch.Tensor:
    return x.detach().double().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)


def differences(ours, theirs) -> tuple[float, float]:
    """max |ours - theirs| and max |ours - theirs| / max(|theirs|) (relative to the largest reference value)."""
    a, b = as_tensor(ours), as_tensor(theirs)
    diff = (a - b).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


def compare(name, ours, theirs, atol, rtol, deviation=None, detail="") -> Piece:
    """PASS when shapes agree and every |ours - theirs| <= atol + rtol * |theirs|; else FAIL, or DEVIATION
    (with its reason) when `deviation` (a golf.recipes.Deviation) declares the difference."""
    a, b = as_tensor(ours), as_tensor(theirs)
    tol = f"atol={atol:g} rtol={rtol:g}"
    text = f"{detail} ({tol})" if detail else f"({tol})"
    if a.shape != b.shape:
        return verdict(name, False, float("inf"), float("inf"),
                       f"shape {tuple(a.shape)} vs record {tuple(b.shape)} {text}", deviation)
    max_abs, max_rel = differences(a, b)
    equal = bool(torch.all((a - b).abs() <= atol + rtol * b.abs())) if a.numel() else True
    return verdict(name, equal, max_abs, max_rel, text, deviation)


def verdict(name, equal, max_abs, max_rel, detail, deviation=None) -> Piece:
    """The status for a comparison already made (used by compare and by pieces that compare exactly)."""
    if equal:
        stale = "; declared deviation no longer differs" if deviation is not None else ""
        return Piece(name, "PASS", max_abs, max_rel, detail + stale)
    if deviation is not None:
        return Piece(name, "DEVIATION", max_abs, max_rel, detail,
                     f"{deviation.kind}: record {deviation.record}, golf {deviation.golf}: {deviation.reason}")
    return Piece(name, "FAIL", max_abs, max_rel, detail)
