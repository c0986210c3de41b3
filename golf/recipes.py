"""Named recipes: Config instances that `python tools/pack.py --recipe NAME` packs into train_gpt.py.

A recipe is a complete choice of pieces and defaults; env vars still override any field at run time.
"""

from golf.config import Config

RECIPES = {
    "default": Config(),
    # The upstream baseline's shape: a plain sequential stack of 9 blocks, MLP x2 with ReLU^2.
    "baseline": Config(block="sequential", mlp_activation="relu2", num_layers=9, mlp_mult=2.0),
    # The default stack on CaseOps data (golf/caseops.py; scored on the original bytes by the val byte sidecar).
    # Paths are the records' (PR #1855 README "Reproducing"); data/prepare_docs.py --caseops builds them from
    # FineWeb docs. `python tools/smoke.py --recipe caseops` runs it on the sample (prepare_sample.py --caseops).
    "caseops": Config(data_path="./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                      tokenizer_path="./data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"),
}
