"""Generate text from an artifact, loaded exactly as evaluation loads it (dequantised weights, eval mode).

    python tools/sample.py ARTIFACT --tokenizer MODEL [--prompt TEXT] [--tokens N] [--temperature T]
                           [--top-k K] [--top-p P] [--seed S] [--device auto|cpu|cuda]

The model is rebuilt from the run config stored in the artifact. Prints the prompt and its
continuation (stopping early if the model ends the document); a timing line goes to stderr.
Exit 2 with one line on stderr for a missing or corrupt artifact, a missing tokenizer, or a
tokenizer whose vocab differs from the artifact's.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from golf.artifact import read_artifact_meta  # noqa: E402
from golf.config import Config, GolfError, config_from_dict  # noqa: E402
from golf.generate import generate  # noqa: E402
from golf.kernels.attention import select_attention  # noqa: E402
from golf.tokenizer import SP_BOS_ID, load_tokenizer  # noqa: E402
from golf.train import load_artifact_model  # noqa: E402

SP_EOS_ID = 2  # DESIGN.md: ids pad/bos/eos/unk = 0/1/2/3


def check_args(args) -> None:
    if args.tokens < 1:
        raise GolfError(f"--tokens {args.tokens}: must be at least 1")
    if args.temperature < 0:
        raise GolfError(f"--temperature {args.temperature}: must be >= 0 (0 is greedy)")
    if args.top_k < 0:
        raise GolfError(f"--top-k {args.top_k}: must be >= 0 (0 keeps every token)")
    if not 0 < args.top_p <= 1:
        raise GolfError(f"--top-p {args.top_p}: must be in (0, 1] (1 keeps every token)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GolfError("--device cuda: no CUDA device here")
    return torch.device(name)


def sample_text(args) -> str:
    check_args(args)
    stored = read_artifact_meta(args.artifact).get("config")
    cfg = config_from_dict(stored, args.artifact)
    sp = load_tokenizer(args.tokenizer)
    if sp.vocab_size() != cfg.vocab_size:
        raise GolfError(f"{args.tokenizer}: vocab {sp.vocab_size()} != the artifact's vocab_size {cfg.vocab_size}: "
                        f"not the tokenizer this model was trained with ({cfg.tokenizer_path})")
    device = pick_device(args.device)
    _, attention_fn = select_attention(device.type, cfg.attention)
    try:
        model = load_artifact_model(args.artifact, cfg, attention_fn, device)
    except GolfError as e:
        lacking = sorted({f.name for f in dataclasses.fields(Config)} - set(stored))
        hint = f"; it predates config fields {', '.join(lacking)} (this build's defaults were used)" if lacking else ""
        raise GolfError(f"{args.artifact}: cannot rebuild its model here: {e}{hint}") from None
    prompt_ids = [SP_BOS_ID] + sp.encode(args.prompt)  # a document starts with BOS, as in training
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    new = generate(model, prompt_ids, args.tokens, cfg.sw_seq_len, device, args.temperature, args.top_k,
                   args.top_p, generator, stop_ids=(SP_BOS_ID, SP_EOS_ID))
    ended = " (the model ended the document)" if new and new[-1] in (SP_BOS_ID, SP_EOS_ID) else ""
    print(f"sample: {len(new)} tokens in {time.perf_counter() - t0:.1f}s on {device.type}{ended}", file=sys.stderr)
    return sp.decode(prompt_ids[1:] + new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--tokenizer", required=True, help="the sentencepiece .model the run trained with")
    parser.add_argument("--prompt", default="The", help="text to continue (default: %(default)r)")
    parser.add_argument("--tokens", type=int, default=200, help="how many tokens to generate (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy (default: 0.8)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0: all (default)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus mass to keep; 1: all (default: 0.95)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    try:
        text = sample_text(args)
    except GolfError as e:
        print(f"sample: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
