"""Run the default recipe from the golf library (torchrun --standalone --nproc_per_node=8 train_gpt.py).

Until tools/pack.py lands this file imports golf; afterwards it is the packed, self-contained recipe.
"""
from golf.train import run

if __name__ == "__main__":
    run(__file__)
