"""Download the challenge's FineWeb shards and tokenizer from a Hugging Face dataset repo (or a local mirror).

Usage: python data/download_fineweb.py [--variant V] --train-shards N [--repo-id ID] [--local-dir data] [--mirror DIR]
                                      [--with-docs]
The default variant is the record's CaseOps data, sp8192_lossless_caps_caseops_v1_reserved, from the hub dataset
romeerp/parameter-golf-caseops-v1 (PR #1855 README; PR #1729 README "Public Artifacts"); --variant sp8192 is the
plain SP8192 data (kevclark/parameter-golf).
Repo layout (upstream data/cached_challenge_fineweb.py): <root>/manifest.json,
<root>/datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin, <root>/tokenizers/fineweb_<V>_bpe<suffix>.{model,vocab}
(suffix: what follows sp<V> in the variant), with <root> = $MATCHED_FINEWEB_REMOTE_ROOT_PREFIX or "datasets".
A CaseOps variant (one whose manifest entry has val_bytes_glob, or whose name says caseops) also has the val byte
sidecars fineweb_val_bytes_NNNNNN.bin beside the val shards; BPB is counted from them. Files land in <local-dir>/datasets/... and
<local-dir>/tokenizers/...; files already there and verified are skipped, every new file is verified before it
replaces anything.
--with-docs also fetches the raw document stream <root>/docs_selected.jsonl (+ docs_selected.source_manifest.json)
to <local-dir>/, the text the shards were made from (first docs_val documents: val), for retraining a tokenizer
(data/prepare_docs.py, e.g. CaseOps) and for tools/bpb_check.py --text-source.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import re
import shutil
from collections.abc import Callable

from tqdm import tqdm

from golf.config import GolfError
from golf.data import shard_token_count
from golf.tokenizer import load_tokenizer

# The SP8192 data is published outside the challenge's own repo (see DESIGN.md); the CaseOps data by its author
# (PR #1729), the one the 1.0611 record trained and scored on.
CASEOPS_VARIANT = "sp8192_lossless_caps_caseops_v1_reserved"
FINEWEB_REPO_IDS = {"sp8192": "kevclark/parameter-golf", CASEOPS_VARIANT: "romeerp/parameter-golf-caseops-v1"}
FINEWEB_DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
FINEWEB_DEFAULT_REMOTE_ROOT = "datasets"
# The raw documents beside the shards (upstream data/cached_challenge_fineweb.py --with-docs).
FINEWEB_DOCS = "docs_selected.jsonl"
FINEWEB_DOCS_MANIFEST = "docs_selected.source_manifest.json"

Fetch = Callable[[str, str], None]  # fetch(repo_path, local_path); FileNotFoundError if the repo lacks it


def variant_vocab(variant: str) -> tuple[int, str]:
    """(vocab size, tokenizer suffix): sp8192 -> (8192, ""), sp8192_lossless_caps_caseops_v1_reserved ->
    (8192, "_lossless_caps_caseops_v1_reserved")."""
    match = re.fullmatch(r"sp(\d+)(_\w+)?", variant)
    if not match:
        raise GolfError(f"--variant {variant}: expected sp<vocab>[_<suffix>], e.g. {CASEOPS_VARIANT} or sp8192")
    return int(match.group(1)), match.group(2) or ""


def fineweb_repo_id(variant: str) -> str:
    return os.environ.get("MATCHED_FINEWEB_REPO_ID") or FINEWEB_REPO_IDS.get(variant, FINEWEB_DEFAULT_REPO_ID)


def hub_fetcher(repo_id: str) -> Fetch:
    """Fetch from a Hugging Face dataset repo through the hub cache (which resumes interrupted downloads)."""

    def fetch_from_hub(repo_path: str, local_path: str) -> None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        try:
            cached = hf_hub_download(repo_id=repo_id, filename=repo_path, repo_type="dataset")
        except RemoteEntryNotFoundError as err:
            raise FileNotFoundError(f"{repo_id}/{repo_path}") from err
        except OSError as err:  # no network, unknown or gated repo, offline mode with nothing cached
            raise GolfError(
                f"{repo_id}/{repo_path}: download failed ({type(err).__name__}: {err}); "
                "check the network, --repo-id and `huggingface-cli login`"
            ) from None
        cached = os.path.realpath(cached)  # cache entries are symlinks to blobs
        try:
            os.link(cached, local_path)  # no second copy of a 200 MB shard when on the same disk
        except OSError:
            shutil.copyfile(cached, local_path)

    return fetch_from_hub


def mirror_fetcher(mirror_dir: str) -> Fetch:
    """Fetch by copying from a local directory laid out like the hub repo (tests, offline machines)."""

    def fetch_from_mirror(repo_path: str, local_path: str) -> None:
        shutil.copyfile(os.path.join(mirror_dir, repo_path), local_path)

    return fetch_from_mirror


def verify_download(path: str, kind: str, vocab_size: int) -> None:
    """Raise GolfError unless path is a complete file of its kind ('.bin', '.model', '.json', other)."""
    if os.path.getsize(path) == 0:
        raise GolfError(f"{path}: empty file")
    if kind == ".bin":
        shard_token_count(path)
    elif kind == ".model":
        pieces = load_tokenizer(path).vocab_size()
        if pieces != vocab_size:
            raise GolfError(f"{path}: tokenizer has {pieces} pieces, expected {vocab_size}")
    elif kind == ".jsonl":  # tens of GB: check the first document parses and the last line is complete
        with open(path, "rb") as f:
            first = f.readline()
            f.seek(-1, os.SEEK_END)
            complete = f.read(1) == b"\n"
        try:
            has_text = "text" in json.loads(first)
        except (ValueError, TypeError, UnicodeDecodeError):
            has_text = False
        if not has_text or not complete:
            problem = "first line is not a JSON document with \"text\"" if not has_text else "last line is incomplete"
            raise GolfError(f"{path}: not a complete JSON-lines document file ({problem})")
    elif kind == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise GolfError(f"{path}: not valid JSON ({err})") from None


def fetch_verified(fetch: Fetch, source: str, repo_path: str, dest: str, vocab_size: int) -> bool:
    """Put a verified copy of repo_path at dest; False when dest was already there and verified.

    FileNotFoundError when the source lacks repo_path; GolfError when what came is bad.
    """
    kind = os.path.splitext(dest)[1]
    if os.path.exists(dest):
        try:
            verify_download(dest, kind, vocab_size)
            return False
        except GolfError as err:
            tqdm.write(f"{err}; downloading it again")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    try:
        if os.path.exists(part):
            os.unlink(part)
        fetch(repo_path, part)
        try:
            verify_download(part, kind, vocab_size)
        except GolfError as err:
            raise GolfError(
                f"{source}/{repo_path}: rejected, nothing kept at {dest} ({err}); if it repeats, the source file "
                "is bad (for the hub: `huggingface-cli delete-cache` and retry)"
            ) from None
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return True


def manifest_plan(
    manifest_path: str, dataset_dir: str, train_shards: int, default_tokenizer_files: list[str], default_sidecars: bool
) -> tuple[int, list[str], bool]:
    """(val shard count, tokenizer files, whether val byte sidecars exist) from the repo's manifest.json, checking
    train_shards fits."""
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    dataset = next((d for d in manifest.get("datasets", []) if d.get("name") == dataset_dir), None)
    if dataset is None:
        raise GolfError(f"{manifest_path}: no dataset {dataset_dir}; check --variant and --repo-id")
    stats = dataset.get("stats") or {}
    if "files_train" in stats and train_shards > int(stats["files_train"]):
        raise GolfError(f"{manifest_path}: {dataset_dir} has {stats['files_train']} train shards, asked for {train_shards}")
    tokenizer = next((t for t in manifest.get("tokenizers", []) if t.get("name") == dataset.get("tokenizer_name")), {})
    tokenizer_files = [tokenizer[key] for key in ("model_path", "vocab_path") if tokenizer.get(key)]
    sidecars = bool(dataset["val_bytes_glob"]) if "val_bytes_glob" in dataset else default_sidecars
    return int(stats.get("files_val", 1)), tokenizer_files or default_tokenizer_files, sidecars


def download_fineweb(
    variant: str = CASEOPS_VARIANT,
    train_shards: int = 1,
    local_dir: str = "data",
    repo_id: str | None = None,
    mirror: str | None = None,
    remote_root: str | None = None,
    with_docs: bool = False,
) -> dict:
    """Fetch the val shards (and their byte sidecars), the first train_shards train shards and the tokenizer
    (with_docs: and the raw document stream); returns {"fetched", "skipped"}."""
    vocab_size, suffix = variant_vocab(variant)
    if train_shards < 0:
        raise GolfError(f"--train-shards {train_shards}: must be 0 or more")
    repo_id = repo_id or fineweb_repo_id(variant)
    fetch = mirror_fetcher(mirror) if mirror else hub_fetcher(repo_id)
    source = mirror or repo_id
    if remote_root is None:
        remote_root = os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", FINEWEB_DEFAULT_REMOTE_ROOT)
    dataset_dir = f"fineweb10B_{variant}"
    local_dataset = os.path.join(local_dir, "datasets", dataset_dir)
    result = {"fetched": [], "skipped": []}

    def get(relative: str, dest: str) -> None:
        repo_path = f"{remote_root}/{relative}" if remote_root else relative
        fetched = fetch_verified(fetch, source, repo_path, dest, vocab_size)
        result["fetched" if fetched else "skipped"].append(dest)

    # The manifest says how many val shards exist and names the tokenizer files; it is optional.
    manifest_path = os.path.join(local_dataset, "manifest.json")
    val_shards, tokenizer_files = 1, [f"tokenizers/fineweb_{vocab_size}_bpe{suffix}.{ext}" for ext in ("model", "vocab")]
    sidecars = "caseops" in variant
    try:
        get("manifest.json", manifest_path)
        val_shards, tokenizer_files, sidecars = manifest_plan(manifest_path, dataset_dir, train_shards,
                                                              tokenizer_files, sidecars)
    except FileNotFoundError:
        tqdm.write(f"{source}: no manifest.json; assuming {val_shards} val shard"
                   f"{' with its byte sidecar' if sidecars else ''} and files {tokenizer_files}")
    plan = [f"datasets/{dataset_dir}/fineweb_val_{i:06d}.bin" for i in range(val_shards)]
    if sidecars:
        plan += [f"datasets/{dataset_dir}/fineweb_val_bytes_{i:06d}.bin" for i in range(val_shards)]
    plan += [f"datasets/{dataset_dir}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    plan += tokenizer_files
    for relative in tqdm(plan, desc=f"{variant} from {source}", unit="file"):
        try:
            get(relative, os.path.join(local_dir, relative))
        except FileNotFoundError:
            raise GolfError(f"{source}: has no {relative}; check --variant, --repo-id and --train-shards") from None
    if with_docs:
        try:
            get(FINEWEB_DOCS, os.path.join(local_dir, FINEWEB_DOCS))
        except FileNotFoundError:
            raise GolfError(f"{source}: has no {FINEWEB_DOCS} under {remote_root or 'its root'}; check --repo-id "
                            "(the challenge's willdepueoai/parameter-golf has it)") from None
        try:
            get(FINEWEB_DOCS_MANIFEST, os.path.join(local_dir, FINEWEB_DOCS_MANIFEST))
        except FileNotFoundError:
            tqdm.write(f"{source}: no {FINEWEB_DOCS_MANIFEST}; the val split is then the first 50,000 documents")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=CASEOPS_VARIANT,
                        help=f"sp<vocab>[_<suffix>]: {CASEOPS_VARIANT} (default, the record's data) or sp8192 (plain)")
    parser.add_argument("--train-shards", type=int, default=1, help="how many train shards, from the first (default 1)")
    parser.add_argument("--repo-id", default=None, help="HF dataset repo (default: $MATCHED_FINEWEB_REPO_ID, else by variant)")
    parser.add_argument("--local-dir", default="data", help="where datasets/ and tokenizers/ go (default data)")
    parser.add_argument("--mirror", default=None, help="copy from this local directory laid out like the repo instead")
    parser.add_argument("--with-docs", action="store_true", help=f"also fetch the raw documents ({FINEWEB_DOCS})")
    args = parser.parse_args()
    try:
        result = download_fineweb(args.variant, args.train_shards, args.local_dir, args.repo_id, args.mirror,
                                  with_docs=args.with_docs)
    except (GolfError, OSError) as err:  # bad input or a failed copy: one line, exit 2 like the other tools
        print(f"download_fineweb: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.local_dir}: fetched {len(result['fetched'])} files, {len(result['skipped'])} already there and verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
