"""CaseOps: encode/decode are exact inverses; the CaseOps tokenizer and its byte sidecar count original bytes."""

import importlib.util
import os
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golf.caseops import ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE, CaseOpsError
from golf.caseops import caseops_decode as decode
from golf.caseops import caseops_encode as encode
from golf.config import GolfError
from golf.data import load_val_byte_sidecar, shard_paths, sidecar_path, val_byte_sidecar_paths, write_shard
from golf.tokenizer import (
    SP_BOS_ID,
    build_byte_luts,
    caseops_token_bytes,
    decoded_byte_count,
    encode_docs,
    load_tokenizer,
    normalised_text,
    tokenizer_transform,
    train_tokenizer,
)
from golf.evaluate import target_byte_counts
from tests.test_tokenizer import TRICKY_TEXTS

# Letters of both cases, operators, a non-ASCII letter pair, digits, punctuation, space: the cases that interact.
CASE_ALPHABET = st.sampled_from(list("aAbBzZ \u00e9\u00c9\u0130\u00df1'.-") + list(OPERATORS) + ["\ue000"])
CASE_TEXTS = st.one_of(st.text(CASE_ALPHABET, max_size=60), st.text(max_size=60))
CASE_EXAMPLES = {
    "": "",
    "iPhone": "i" + CAPNEXT + "phone",
    "NASA's": ALLCAPS + "nasa's",
    "McDonald": TITLE + "mc" + CAPNEXT + "donald",
    "The I x": TITLE + "the " + TITLE + "i x",
    "ÉCOLE 42": "É" + ALLCAPS + "cole 42",  # only ASCII letters carry case operators
    "a" + TITLE + "b": "a" + ESC + TITLE + "b",
}


@pytest.mark.parametrize("text, encoded", CASE_EXAMPLES.items())
def test_examples_encode_as_the_records_do(text, encoded):
    assert encode(text) == encoded
    assert decode(encoded) == text


@settings(max_examples=400, deadline=None)
@given(CASE_TEXTS)
def test_decode_inverts_encode_on_every_string(text):
    encoded = encode(text)
    assert decode(encoded) == text
    assert encode(decode(encoded)) == encoded
    assert not any("A" <= c <= "Z" for c in encoded)  # every ASCII capital became an operator


UPSTREAM_RECORD = "records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"


@cache
def records_lossless_caps():
    """The merged record's lossless_caps.py, from the openai/parameter-golf checkout at $GOLF_UPSTREAM."""
    path = os.path.join(os.environ["GOLF_UPSTREAM"], UPSTREAM_RECORD, "lossless_caps.py")
    spec = importlib.util.spec_from_file_location("records_lossless_caps", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not os.environ.get("GOLF_UPSTREAM"), reason="needs GOLF_UPSTREAM (an openai/parameter-golf checkout)")
@settings(max_examples=300, deadline=None)
@given(CASE_TEXTS)
def test_encode_is_the_records_caseops_v1_transform(text):
    records = records_lossless_caps()
    assert encode(text) == records.get_text_transform("lossless_caps_caseops_v1")(text)
    assert records.get_text_inverse_transform("lossless_caps_caseops_v1")(encode(text)) == text


@pytest.mark.parametrize("bad, why", [
    (TITLE, "not followed by an ASCII letter"),
    (TITLE + "1", "not followed by an ASCII letter"),
    ("ab" + ALLCAPS + "c", "inside a word"),
    (ESC + "x", "ESC before"),
    ("x" + ESC, "not followed by an operator"),
    (CAPNEXT + CAPNEXT + "a", "right after"),
])
def test_malformed_text_is_one_clear_error(bad, why):
    with pytest.raises(CaseOpsError, match=why) as err:
        decode("ok " + bad)
    assert "offset" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, GolfError)


@pytest.fixture(scope="module")
def caseops_sp(tmp_path_factory, sample_docs):
    path = tmp_path_factory.mktemp("caseops") / "caseops_1024.model"
    return load_tokenizer(train_tokenizer(sample_docs[-10:], 1024, str(path), "caseops"))


def test_caseops_tokenizer_reserves_operators_at_fixed_ids(caseops_sp, sample_tokenizer):
    assert [caseops_sp.id_to_piece(i) for i in range(8)] == ["<pad>", "<s>", "</s>", "<unk>", *OPERATORS]
    assert caseops_sp.bos_id() == SP_BOS_ID
    assert tokenizer_transform(caseops_sp) == "caseops"
    assert tokenizer_transform(load_tokenizer(sample_tokenizer)) == "plain"
    # "The" and "the" share the lower-case piece; the case is the TITLE operator in front.
    the, title_the = encode_docs(caseops_sp, ["the", "The"])
    assert title_the == [OPERATORS.index(TITLE) + 4] + the


def stream(sp, texts):
    return np.array([t for ids in encode_docs(sp, texts) for t in [SP_BOS_ID] + ids], dtype=np.uint16)


CASE_DOCS = TRICKY_TEXTS + ["iPhone NASA's McDonald", "A\x1fA B\u200bC", "literal " + TITLE + ESC + " operators " + ESC + ESC + "A",
                            "  The leading SPACE", "ALL CAPS LINE.\nNext Line"]


def test_sidecar_counts_the_original_bytes_of_every_document(caseops_sp):
    luts = build_byte_luts(caseops_sp, caseops_sp.vocab_size())
    tokens = stream(caseops_sp, CASE_DOCS)
    sidecar = caseops_token_bytes(tokens, luts)
    assert sidecar.dtype == np.uint16 and sidecar.shape == tokens.shape
    assert (sidecar[tokens == SP_BOS_ID] == 0).all()
    # per document: its tokens' counts sum to the UTF-8 bytes of the decoded, inverted text
    starts = list(np.flatnonzero(tokens == SP_BOS_ID)) + [len(tokens)]
    for (s, e), text in zip(zip(starts, starts[1:]), CASE_DOCS):
        original = normalised_text(caseops_sp, text)  # what the plain tokenizer also scores
        assert int(sidecar[s:e].sum()) == len(original.encode("utf-8")), text
    assert int(sidecar.astype(np.int64).sum()) == decoded_byte_count(caseops_sp, tokens.tolist())
    # the LUT rule alone counts 3 bytes per operator: more than the original text has
    ids = torch.from_numpy(tokens.astype(np.int64))
    assert int(target_byte_counts(ids, luts).sum()) > int(sidecar.astype(np.int64).sum())


@settings(max_examples=60, deadline=None)
@given(st.lists(CASE_TEXTS, min_size=1, max_size=4))
def test_sidecar_equals_decoded_bytes_on_random_text(caseops_sp, texts):
    tokens = stream(caseops_sp, texts)
    sidecar = caseops_token_bytes(tokens, build_byte_luts(caseops_sp, caseops_sp.vocab_size()))
    assert int(sidecar.astype(np.int64).sum()) == decoded_byte_count(caseops_sp, tokens.tolist())


def test_sidecar_files_sit_beside_val_shards_and_are_verified(tmp_path):
    tokens = np.array([SP_BOS_ID, 10, 11, SP_BOS_ID, 12], dtype=np.uint16)
    write_shard(str(tmp_path / "x_train_000000.bin"), tokens)
    write_shard(str(tmp_path / "x_val_000000.bin"), tokens)
    assert val_byte_sidecar_paths(str(tmp_path)) == [] and load_val_byte_sidecar(str(tmp_path)) is None
    side = sidecar_path(str(tmp_path / "x_val_000000.bin"))
    assert side.endswith("x_val_bytes_000000.bin")
    write_shard(side, np.array([0, 3, 1, 0, 2], dtype=np.uint16))
    assert [p.rsplit("/", 1)[1] for p in shard_paths(str(tmp_path), "val")] == ["x_val_000000.bin"]  # not the sidecar
    assert load_val_byte_sidecar(str(tmp_path)).tolist() == [0, 3, 1, 0, 2]
    assert load_val_byte_sidecar(str(tmp_path), max_tokens=3).tolist() == [0, 3, 1]
    val = torch.from_numpy(tokens.astype(np.int64))
    assert target_byte_counts(val, None, load_val_byte_sidecar(str(tmp_path))).tolist() == [3, 1, 0, 2]
    write_shard(side, np.array([0, 3, 1], dtype=np.uint16))  # valid layout, wrong count
    with pytest.raises(GolfError, match="3 byte counts for the 5 tokens"):
        load_val_byte_sidecar(str(tmp_path))
    write_shard(str(tmp_path / "x_val_000001.bin"), tokens)  # a second val shard without a sidecar
    with pytest.raises(GolfError, match="x_val_bytes_000001.bin: byte sidecar missing"):
        val_byte_sidecar_paths(str(tmp_path))

