"""Tokenizer training, loading, and the BPB byte rule: LUT counts must equal decoded UTF-8 bytes."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golf.config import GolfError
from golf.tokenizer import (
    SP_BOS_ID,
    SP_MAX_SENTENCE_BYTES,
    build_byte_luts,
    decoded_byte_count,
    hard_split_utf8,
    load_tokenizer,
    token_bytes,
    train_tokenizer,
    trainer_sentences,
)

TRICKY_TEXTS = [
    "Hello world.",
    " leading space",
    "   three leading spaces and trailing   ",
    "multiple   spaces\tand\ttabs",
    "line one\nline two\n\n\nline five\r\nwindows",
    "café naïve résumé",
    "中文 text 中文字符",
    "emoji 🙂 needs byte fallback 🙂🙂",
    "digits 1234567890 and 3.14159 and 1,000,000",
    "\u00a0nbsp and \u3000ideographic space and ﬁ ligature",
    "The United States of America",
    "▁literal block char▁▁",
    "",
    "x",
]


def stream_of(sp, texts):
    """[BOS] + ids for each text, concatenated: the layout of a shard."""
    tokens = []
    for text in texts:
        tokens += [SP_BOS_ID] + sp.encode(text)
    return tokens


def lut_byte_count(luts, tokens):
    """Sum of token_bytes over every target of the stream (tokens[0] is a BOS, never a target)."""
    ids = torch.tensor(tokens, dtype=torch.int64)
    return int(token_bytes(ids[:-1], ids[1:], luts).sum())


@pytest.fixture(scope="module")
def sp(sample_tokenizer):
    return load_tokenizer(sample_tokenizer)


@pytest.fixture(scope="module")
def luts(sp):
    return build_byte_luts(sp, sp.vocab_size())


def test_tokenizer_has_challenge_ids_and_byte_fallback(sp):
    assert sp.vocab_size() == 1024
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert sp.bos_id() == 1 and sp.eos_id() == 2 and sp.unk_id() == 3 and sp.pad_id() == 0
    assert sp.encode("🙂", out_type=str) == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert sp.encode("1234", out_type=str) == ["1", "2", "3", "4"]  # split_digits


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_lut_count_equals_decoded_count_on_every_clean_prefix(sp, luts, text):
    tokens = stream_of(sp, [text])
    # Prefixes ending on a non-byte piece never cut a byte-fallback character in half.
    for end in range(1, len(tokens) + 1):
        if not sp.is_byte(tokens[end - 1]):
            assert lut_byte_count(luts, tokens[:end]) == decoded_byte_count(sp, tokens[:end]), (text, end)


def test_lut_count_equals_decoded_count_for_many_documents(sp, luts, sample_docs):
    texts = TRICKY_TEXTS + [doc[:3000] for doc in sample_docs[:5]]
    tokens = stream_of(sp, texts)
    assert lut_byte_count(luts, tokens) == decoded_byte_count(sp, tokens)
    assert decoded_byte_count(sp, tokens) == sum(len(sp.decode(sp.encode(t)).encode("utf-8")) for t in texts)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), min_size=1, max_size=4))
def test_lut_count_equals_decoded_count_on_random_unicode(sp, luts, texts):
    tokens = stream_of(sp, texts)
    assert lut_byte_count(luts, tokens) == decoded_byte_count(sp, tokens)


def test_leading_space_after_bos_is_dropped_by_decoding(sp, luts):
    # Encoding never starts a document with a '▁' piece (normalisation strips leading spaces),
    # so build such a stream by hand: decoding drops that space, and the LUT must agree.
    the = sp.piece_to_id("\u2581the")
    assert sp.id_to_piece(the) == "\u2581the"
    assert sp.decode([SP_BOS_ID, the]) == "the"
    tokens = [SP_BOS_ID, the, the, SP_BOS_ID, the, sp.piece_to_id("<0x41>"), the]
    assert decoded_byte_count(sp, tokens) == len("the the") + len("theA the")
    assert lut_byte_count(luts, tokens) == decoded_byte_count(sp, tokens)


def test_hand_picked_pieces_follow_the_rule(sp, luts):
    def count(prev_piece, piece):
        prev, target = torch.tensor([sp.piece_to_id(prev_piece)]), torch.tensor([sp.piece_to_id(piece)])
        return int(token_bytes(prev, target, luts)[0])

    assert count("a", "\u2581the") == 4  # 'the' plus the space the '▁' stands for
    assert count("<s>", "\u2581the") == 3  # a document's first space is not decoded
    assert count("</s>", "\u2581the") == 3
    assert count("<0x41>", "\u2581the") == 4  # byte pieces are text, not boundaries
    assert count("a", "\u2581") == 1
    assert count("\u2581the", "he") == 2
    assert count("a", "<0xF0>") == 1  # one byte, not len('<0xF0>') and not 3
    assert count("a", "<s>") == 0 and count("a", "<pad>") == 0 and count("a", "<unk>") == 0
    bodies = {i: sp.id_to_piece(i).lstrip("\u2581") for i in range(sp.vocab_size()) if not sp.is_byte(i)}
    multibyte = [i for i, body in bodies.items() if len(body.encode()) > len(body)]
    assert multibyte  # e.g. '’': 1 character, 3 UTF-8 bytes
    for i in multibyte:
        assert count("a", sp.id_to_piece(i)) == len(sp.decode([sp.piece_to_id("a"), i]).encode()) - 1


def test_luts_pad_ids_beyond_the_tokenizer(sp):
    base_bytes, has_leading_space, is_boundary = build_byte_luts(sp, sp.vocab_size() + 64)
    assert base_bytes.dtype == torch.int16 and has_leading_space.dtype == torch.bool and is_boundary.dtype == torch.bool
    assert base_bytes.shape == (sp.vocab_size() + 64,)
    assert (base_bytes[sp.vocab_size() :] == 0).all() and is_boundary[sp.vocab_size() :].all()
    assert not has_leading_space[sp.vocab_size() :].any()
    with pytest.raises(GolfError, match="VOCAB_SIZE"):
        build_byte_luts(sp, sp.vocab_size() - 1)


@given(st.text(max_size=300), st.integers(min_value=4, max_value=40))
def test_hard_split_keeps_text_and_respects_the_limit(text, max_bytes):
    pieces = list(hard_split_utf8(text, max_bytes))
    assert "".join(pieces) == text
    assert all(len(p.encode("utf-8")) <= max_bytes for p in pieces)


def test_long_line_content_reaches_the_trainer(tmp_path, sample_docs):
    # One 33 KB line with no sentence end: sentencepiece would drop it whole if it saw it unsplit.
    rare_line = " ".join(["Zorblaxian"] * 3000)
    docs = sample_docs[-3:] + [rare_line]
    assert max(len(s.encode("utf-8")) for s in trainer_sentences(docs)) <= SP_MAX_SENTENCE_BYTES
    assert max(len(s.encode("utf-8")) for s in trainer_sentences([doc for doc in sample_docs])) <= SP_MAX_SENTENCE_BYTES
    sp = load_tokenizer(train_tokenizer(docs, 512, str(tmp_path / "rare.model")))
    assert sp.encode("Zorblaxian Zorblaxian", out_type=str) == ["Zorblaxian", "\u2581Zorblaxian"]


def test_training_is_deterministic(tmp_path, sample_docs):
    first = train_tokenizer(sample_docs[-4:], 512, str(tmp_path / "a" / "m.model"))
    second = train_tokenizer(sample_docs[-4:], 512, str(tmp_path / "b" / "other_name.model"))
    assert open(first, "rb").read() == open(second, "rb").read()


def test_too_small_corpus_is_an_error_and_keeps_the_old_model(tmp_path, sample_tokenizer):
    target = tmp_path / "m.model"
    target.write_bytes(open(sample_tokenizer, "rb").read())
    with pytest.raises(GolfError, match="m.model"):
        train_tokenizer(["the cat sat on the mat."] * 20, 1024, str(target))
    assert target.read_bytes() == open(sample_tokenizer, "rb").read()
    assert os.listdir(tmp_path) == ["m.model"]


def test_load_tokenizer_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "missing.model"
    with pytest.raises(GolfError, match="missing.model.*prepare_sample.py"):
        load_tokenizer(str(missing))
    for name, content in [("empty.model", b""), ("junk.model", b"not a model" * 10)]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(GolfError, match=f"{name}.*prepare_sample.py"):
            load_tokenizer(str(path))
