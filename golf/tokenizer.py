"""Train and load the sentencepiece BPE tokenizer, and count UTF-8 bytes per token for BPB.

Evaluation's one byte count is golf.evaluate.target_byte_counts: the data's byte sidecar when it has one
(a CaseOps tokenizer: `caseops_token_bytes` wrote it), else `token_bytes` driven by `build_byte_luts`.
`decoded_byte_count` is the slow canonical twin both must agree with exactly.
"""

import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece
import torch

from golf.caseops import ESC, OPERATORS, caseops_decode, caseops_encode
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
# A CaseOps tokenizer reserves the operators as user-defined symbols right after pad/bos/eos/unk,
# at the records' ids (PR #1729 tokenizer: TITLE 4, ALLCAPS 5, CAPNEXT 6, ESC 7).
CASEOPS_FIRST_ID = 4
CASEOPS_ESC_ID = CASEOPS_FIRST_ID + OPERATORS.index(ESC)
TEXT_INVERSES = {"plain": lambda text: text, "caseops": caseops_decode}
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


def train_tokenizer(docs: Iterable[str], vocab_size: int, model_path: str, transform: str = "plain") -> str:
    """Train a BPE model on docs with the challenge settings; write it atomically to model_path.

    transform "caseops": trains on caseops_encode(doc) with the operators reserved as user-defined
    symbols at ids 4-7 (BOS stays 1). Deterministic: the same docs and vocab_size give a byte-identical
    file (the model is built in memory, so no temp path ends up in its trainer_spec).
    """
    encode = caseops_encode if transform == "caseops" else (lambda text: text)
    reserved = dict(user_defined_symbols=list(OPERATORS)) if transform == "caseops" else {}
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=trainer_sentences(encode(doc) for doc in docs),
        model_writer=model,
        vocab_size=vocab_size,
        num_threads=SP_TRAIN_THREADS,
        minloglevel=2,
        **SP_TRAINER_SETTINGS,
        **reserved,
    )
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    if sp.vocab_size() != vocab_size:
        raise GolfError(
            f"{model_path}: the training text only supports {sp.vocab_size()} pieces, not vocab {vocab_size}; "
            "train on more text or ask for a smaller vocab"
        )
    if tokenizer_transform(sp) != transform:
        raise GolfError(f"{model_path}: trained model is not a {transform} tokenizer; this is a bug in golf.tokenizer")
    write_bytes_atomic(model_path, model.getvalue())
    return model_path


def tokenizer_transform(sp: sentencepiece.SentencePieceProcessor) -> str:
    """"caseops" when ids 4-7 are the CaseOps operators (text is caseops_encode()d first), else "plain"."""
    ids = range(CASEOPS_FIRST_ID, CASEOPS_FIRST_ID + len(OPERATORS))
    if sp.vocab_size() > ids[-1] and tuple(sp.id_to_piece(i) for i in ids) == OPERATORS:
        return "caseops"
    return "plain"


def normalised_text(sp: sentencepiece.SentencePieceProcessor, text: str) -> str:
    """text as the tokenizer's normaliser writes it (nmt_nfkc, spaces collapsed, as spaces): what a plain
    tokenizer's stream of it decodes to, i.e. the text BPB is scored on."""
    return sp.normalize(text).replace(SP_SPACE, " ")


def encode_docs(sp: sentencepiece.SentencePieceProcessor, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no BOS), through the tokenizer's text transform.

    CaseOps text is normalised before caseops_encode, so the tokenizer's normaliser has nothing left to
    change in it: on raw text it would delete characters between operators ("A\x1fA" -> TITLE "a" TITLE
    "a": a TITLE inside a word, which caseops_decode rejects).
    """
    if tokenizer_transform(sp) == "caseops":
        texts = [caseops_encode(normalised_text(sp, text)) for text in texts]
    return sp.encode(list(texts), out_type=int)


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


def caseops_token_bytes(tokens: np.ndarray, luts: tuple[torch.Tensor, ...]) -> np.ndarray:
    """Original UTF-8 bytes each token of a CaseOps stream stands for: the byte sidecar, uint16[N].

    tokens: a whole stream of [BOS] + doc ids ... (uint16[N]). A token's decoded bytes (token_bytes;
    after BOS at position 0) are its original bytes, since ASCII case changes no byte count, except
    that an operator stands for none: 0, unless an ESC (itself not escaped) makes it a literal
    character of the text, which counts its 3 bytes. BOS counts 0.
    """
    ids = torch.from_numpy(np.asarray(tokens).astype(np.int64))
    prev = torch.cat([torch.tensor([SP_BOS_ID]), ids[:-1]])
    counts = token_bytes(prev, ids, luts)
    operator = (ids >= CASEOPS_FIRST_ID) & (ids < CASEOPS_FIRST_ID + len(OPERATORS))
    literal = torch.zeros_like(operator)
    for p in (ids == CASEOPS_ESC_ID).nonzero().flatten().tolist():  # in order, so ESC ESC is one literal ESC
        if not literal[p] and p + 1 < len(ids):
            literal[p + 1] = True
    counts[operator & ~literal] = 0
    if counts.numel() and int(counts.max()) > 0xFFFF:
        raise GolfError(f"a piece of {int(counts.max())} bytes does not fit the uint16 byte sidecar")
    return counts.numpy().astype(np.uint16)


def decode_document(sp: sentencepiece.SentencePieceProcessor, ids: Sequence[int]) -> str:
    """The original text of one document's ids (no BOS): sentencepiece decode, then the transform's inverse."""
    return TEXT_INVERSES[tokenizer_transform(sp)](sp.decode([int(i) for i in ids]))


def split_documents(tokens: Sequence[int]) -> list[list[int]]:
    """A stream cut at each BOS into documents (BOS dropped); ids before the first BOS form document 0."""
    docs: list[list[int]] = []
    doc: list[int] = []
    for i, token in enumerate(tokens):
        if int(token) == SP_BOS_ID:
            if i > 0:
                docs.append(doc)
            doc = []
        else:
            doc.append(int(token))
    docs.append(doc)
    return docs


def decoded_byte_count(sp: sentencepiece.SentencePieceProcessor, tokens: Sequence[int]) -> int:
    """The canonical byte count: split tokens at BOS into documents, decode each (inverting the tokenizer's
    text transform), sum UTF-8 lengths."""
    return sum(len(decode_document(sp, doc).encode("utf-8")) for doc in split_documents(tokens))
