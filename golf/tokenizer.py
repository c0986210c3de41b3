"""Train and load the sentencepiece BPE tokenizer, and count UTF-8 bytes per token for BPB.

`token_bytes` (driven by `build_byte_luts`) is the one byte count evaluation uses;
`decoded_byte_count` is the slow canonical twin it must agree with exactly.
"""

import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece
import torch

from golf.config import GolfError
from golf.data import write_bytes_atomic

# sentencepiece's default trainer max_sentence_length: longer input lines are dropped without
# an error, so a 100 KB speech given as one line would teach the tokenizer nothing.
SP_MAX_SENTENCE_BYTES = 4192
# Fixed so that the thread count stored in the model's trainer_spec (and hence the file's bytes)
# is the same on every machine; the learned pieces do not depend on it.
SP_TRAIN_THREADS = 2
SP_BOS_ID = 1
SP_SPACE = "\u2581"  # '▁': sentencepiece's visible stand-in for a space
# Settings of the challenge tokenizers (upstream data/download_hf_docs_and_tokenize.py).
SP_TRAINER_SETTINGS = dict(
    model_type="bpe",
    character_coverage=0.999,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=0,
    bos_id=1,
    eos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MAKE_TOKENIZER_HINT = "run `python data/prepare_sample.py` (sample) or `python data/download_fineweb.py` (FineWeb)"


def hard_split_utf8(text: str, max_bytes: int) -> Iterator[str]:
    """Cut text into pieces of at most max_bytes UTF-8 bytes, preferring the last space, never inside a character."""
    data = text.encode("utf-8")
    while len(data) > max_bytes:
        cut = data.rfind(b" ", 1, max_bytes + 1)
        if cut <= 0:
            cut = max_bytes
            while data[cut] & 0xC0 == 0x80:  # 0b10xxxxxx: continuation byte, mid-character
                cut -= 1
        yield data[:cut].decode("utf-8")
        data = data[cut:]
    yield data.decode("utf-8")


def trainer_sentences(docs: Iterable[str], max_bytes: int = SP_MAX_SENTENCE_BYTES) -> Iterator[str]:
    """Yield the non-blank lines of docs split into sentences, each at most max_bytes UTF-8 bytes."""
    for doc in docs:
        for line in doc.splitlines():
            for sentence in SENTENCE_END.split(line):
                for piece in hard_split_utf8(sentence, max_bytes):
                    if piece.strip():
                        yield piece


def train_tokenizer(docs: Iterable[str], vocab_size: int, model_path: str) -> str:
    """Train a BPE model on docs with the challenge settings; write it atomically to model_path.

    Deterministic: the same docs and vocab_size give a byte-identical file (the model is built
    in memory, so no temp path ends up in its trainer_spec).
    """
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=trainer_sentences(docs),
        model_writer=model,
        vocab_size=vocab_size,
        num_threads=SP_TRAIN_THREADS,
        minloglevel=2,
        **SP_TRAINER_SETTINGS,
    )
    trained = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).vocab_size()
    if trained != vocab_size:
        raise GolfError(
            f"{model_path}: the training text only supports {trained} pieces, not vocab {vocab_size}; "
            "train on more text or ask for a smaller vocab"
        )
    write_bytes_atomic(model_path, model.getvalue())
    return model_path


def load_tokenizer(path: str) -> sentencepiece.SentencePieceProcessor:
    """Load a sentencepiece model; a missing or unreadable file is a GolfError saying how to make one."""
    if not os.path.isfile(path):
        raise GolfError(f"{path}: tokenizer model not found; {MAKE_TOKENIZER_HINT}")
    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as err:
        raise GolfError(f"{path}: not a sentencepiece model ({err}); delete it and {MAKE_TOKENIZER_HINT}") from None


def piece_byte_rule(sp: sentencepiece.SentencePieceProcessor, token_id: int) -> tuple[int, bool, bool]:
    """(bytes without the leading space, has a leading '▁', is a boundary) for one piece, per DESIGN.md."""
    if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
        return 0, False, True
    if sp.is_byte(token_id):  # '<0xNN>' stands for exactly one byte
        return 1, False, False
    piece = sp.id_to_piece(token_id)
    leading_space = piece.startswith(SP_SPACE)
    body = piece[1:] if leading_space else piece
    # An inner '▁' decodes to one space byte, not its 3-byte UTF-8 form.
    return len(body.replace(SP_SPACE, " ").encode("utf-8")), leading_space, False


def build_byte_luts(
    sp: sentencepiece.SentencePieceProcessor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-id lookup tables (base_bytes int16[V], has_leading_space bool[V], is_boundary bool[V]).

    Ids from sp.vocab_size() up to vocab_size (model padding) count 0 bytes and are boundaries.
    """
    if vocab_size < sp.vocab_size():
        raise GolfError(
            f"tokenizer has {sp.vocab_size()} pieces but vocab_size is {vocab_size}; set VOCAB_SIZE >= {sp.vocab_size()}"
        )
    base_bytes = torch.zeros(vocab_size, dtype=torch.int16)
    has_leading_space = torch.zeros(vocab_size, dtype=torch.bool)
    is_boundary = torch.ones(vocab_size, dtype=torch.bool)
    for token_id in range(sp.vocab_size()):
        base_bytes[token_id], has_leading_space[token_id], is_boundary[token_id] = piece_byte_rule(sp, token_id)
    return base_bytes, has_leading_space, is_boundary


def token_bytes(prev: torch.Tensor, target: torch.Tensor, luts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """UTF-8 bytes each target token adds to the decoded text, int64 of target's shape.

    prev, target: int64 ids of the same shape, prev[i] the token before target[i]. The leading
    '▁' of a target is a space byte unless prev is a boundary (BOS starts a document, and
    sentencepiece drops a document's first leading space when decoding).
    """
    base_bytes, has_leading_space, is_boundary = luts
    space = has_leading_space[target] & ~is_boundary[prev]
    return base_bytes[target].to(torch.int64) + space.to(torch.int64)


def decoded_byte_count(sp: sentencepiece.SentencePieceProcessor, tokens: Sequence[int]) -> int:
    """The canonical byte count: split tokens at BOS into documents, decode each, sum UTF-8 lengths."""
    total = 0
    doc: list[int] = []
    for token in list(tokens) + [SP_BOS_ID]:
        if int(token) == SP_BOS_ID:
            total += len(sp.decode(doc).encode("utf-8"))
            doc = []
        else:
            doc.append(int(token))
    return total
