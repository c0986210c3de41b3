"""Feed-forward layer: up-projection, squared activation, zero-initialised down-projection."""

import torch
import torch.nn.functional as F
from torch import nn

from golf.config import pick
from golf.kernels.mlp_act import leaky_relu_sq


def relu_sq(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


# LeakyReLU(0.5)^2 keeps gradient flowing through negative pre-activations (2026 records).
MLP_ACTIVATIONS = {"relu2": relu_sq, "leaky_relu2": leaky_relu_sq}


class MLP(nn.Module):
    def __init__(self, dim: int, mult: float, activation: str):
        super().__init__()
        hidden = int(dim * mult)
        self.fc = nn.Linear(dim, hidden, bias=False)
        self.proj = nn.Linear(hidden, dim, bias=False)
        nn.init.zeros_(self.proj.weight)  # each block starts as the identity on the residual
        self.act = pick(MLP_ACTIVATIONS, activation, "MLP_ACTIVATION")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))
