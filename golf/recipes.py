"""Named recipes: Config instances that `python tools/pack.py --recipe NAME` packs into train_gpt.py.

A recipe is a complete choice of pieces and defaults; env vars still override any field at run time.
"""

from golf.config import Config

RECIPES = {
    "default": Config(),
    # The upstream baseline's shape: a plain sequential stack of 9 blocks, MLP x2 with ReLU^2.
    "baseline": Config(block="sequential", mlp_activation="relu2", num_layers=9, mlp_mult=2.0),
}
