"""AWQ-lite (PR #2101, from PR #1918): the most salient column groups of the quantised matrices keep more bits.

Saliency of input column j of weight W (rows, cols): act_rms_j * mean_i |W_ij|, act_rms_j the RMS of the layer's
input feature j over the calibration tokens (sqrt(diag(X^T X) / rows), so it comes from the GPTQ Hessian). A group
is `group` consecutive columns (a trailing partial group is never a candidate); its score is the sum over its
columns. The top_k groups over ALL candidate matrices together (those quantised below `bits` that have a Hessian)
are quantised at `bits` inside the same GPTQ solve (golf/quant/gptq.py), on their own per-row grid: the tensor's
clip rule with the finer step clip / qmax(bits). In #2101's runs (AWQ_LITE_GROUP_TOP_K=1, AWQ_LITE_BITS=8,
AWQ_LITE_GROUP_SIZE=64) the one group is a 64-column group of the int7 tied embedding (train_seed42.log
"gptq (int7)+awqgrpint8+lqer_asym: tok_emb.weight"); the artifact stores the group starts and one fp16 step per row.
"""
from dataclasses import dataclass

import torch

from golf.config import GolfError
from golf.quant.rtn import as_rows


@dataclass(frozen=True, eq=False)
class AwqGroups:
    """Column groups of a QuantTensor stored at `bits` with their own per-row step (the rest use the tensor's)."""
    starts: tuple[int, ...]  # first column of each group, ascending
    size: int  # columns per group
    bits: int
    scale: torch.Tensor  # (rows,) fp16 step of the protected columns

    def columns(self) -> torch.Tensor:
        """Indices of the protected columns."""
        return torch.tensor([s + c for s in self.starts for c in range(self.size)], dtype=torch.int64)

    def dequantize(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """rows (the tensor's q * its step) with the protected columns recomputed on their own step."""
        cols = self.columns()
        out = rows.clone()
        out[:, cols] = q[:, cols].float() * self.scale.float()[:, None]
        return out


def activation_rms(hessians: dict[str, torch.Tensor], rows_seen: dict[str, int]) -> dict[str, torch.Tensor]:
    """{name: (cols,) RMS of each input feature} from Hessian sums X^T X and the input rows behind them."""
    return {n: (torch.diagonal(h).float().clamp_min(0) / max(rows_seen[n], 1)).sqrt()
            for n, h in hessians.items() if n in rows_seen}


def group_scores(w: torch.Tensor, act_rms: torch.Tensor, group: int) -> torch.Tensor:
    """(cols // group,) saliency of each whole group of `group` columns of w (rows, cols)."""
    saliency = act_rms.float() * as_rows(w).abs().mean(dim=0)
    n = saliency.numel() // group
    return saliency[: n * group].reshape(n, group).sum(dim=1)


def protect_salient_groups(state: dict[str, torch.Tensor], plan: dict[str, dict], act_rms: dict[str, torch.Tensor],
                           top_k: int, bits: int, group: int) -> dict[str, dict]:
    """plan with a "protect" entry (starts, group, bits) on the matrices holding the top_k groups by saliency.

    Candidates: GPTQ matrices quantised below `bits` with an activation RMS; ranked over all of them at once
    (ties keep state order, then column order, as the record's stable sort does)."""
    if not 2 <= bits <= 8 or group <= 0:
        raise GolfError(f"AWQ_BITS={bits} / AWQ_GROUP={group}: need bits 2..8 and a group of at least 1 column")
    candidates = []
    for name, w in state.items():
        spec = plan[name]
        if spec.get("bits") is not None and spec["bits"] < bits and spec.get("method") == "gptq" and name in act_rms:
            scores = group_scores(w, act_rms[name], group)
            candidates += [(float(s), name, g * group) for g, s in enumerate(scores.tolist())]
    chosen: dict[str, list[int]] = {}
    for _, name, start in sorted(candidates, key=lambda c: -c[0])[:top_k]:
        chosen.setdefault(name, []).append(start)
    return {name: ({**spec, "protect": (tuple(sorted(chosen[name])), group, bits)} if name in chosen else spec)
            for name, spec in plan.items()}
