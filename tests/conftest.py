"""Shared fixtures: the bundled sample corpus and a small tokenizer trained on it once per session."""

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when a @triton.jit function is defined, i.e. when golf.kernels is first
# imported, which any model import does: set it before any test module loads golf.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from data.prepare_sample import SAMPLE_CORPUS, read_corpus, split_train_val  # noqa: E402
from golf.tokenizer import train_tokenizer  # noqa: E402

SAMPLE_TOKENIZER_VOCAB = 1024


@pytest.fixture(scope="session")
def sample_docs() -> list[str]:
    """Texts of the sample corpus's train documents (222 docs, ~10 MB), in id order."""
    train, _ = split_train_val(read_corpus(SAMPLE_CORPUS))
    return [doc["text"] for doc in train]


@pytest.fixture(scope="session")
def sample_tokenizer(tmp_path_factory, sample_docs) -> str:
    """Path of a vocab-1024 BPE model trained on the last 10 train docs (~370 KB, 1993-2021; under a second)."""
    path = tmp_path_factory.mktemp("tokenizer") / f"sample_{SAMPLE_TOKENIZER_VOCAB}_bpe.model"
    return train_tokenizer(sample_docs[-10:], SAMPLE_TOKENIZER_VOCAB, str(path))


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> dict:
    """The sample corpus as vocab-1024 shards + a plain tokenizer (the LUT byte rule) in a temp dir:
    {'data_path', 'tokenizer_path'}."""
    from data.prepare_sample import prepare_sample

    out = tmp_path_factory.mktemp("sample_data")
    prepare_sample(out_dir=str(out), vocab_size=SAMPLE_TOKENIZER_VOCAB, transform="plain")
    return {"data_path": str(out / "datasets" / f"sample_sp{SAMPLE_TOKENIZER_VOCAB}"),
            "tokenizer_path": str(out / "tokenizers" / f"sample_{SAMPLE_TOKENIZER_VOCAB}_bpe.model"),
            "vocab_size": SAMPLE_TOKENIZER_VOCAB}


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: on a shared 2-core machine extra intra-op threads only contend (a 32-wide matmul
    went from 9 ms to 600 ms under load)."""
    torch.set_num_threads(1)
