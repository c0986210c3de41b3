"""golf/equiv/evaluate.py against the 1.0611 record: PASS on the record as it is, FAIL on an altered copy."""

import pytest

from golf.equiv.evaluate import check_on
from golf.equiv.record import load_record
from golf.recipes import RECIPES
from tests.equiv_record import altered_copy, needs_record, record_dir

pytestmark = [needs_record, pytest.mark.slow]


@pytest.fixture(scope="module")
def caseops_sample(tmp_path_factory):
    """A CaseOps sample (vocab 1024, val byte sidecar) as data/prepare_sample.py builds it by default."""
    from data.prepare_sample import prepare_sample

    out = tmp_path_factory.mktemp("caseops_sample")
    prepare_sample(str(out), vocab_size=1024)
    return out / "datasets" / "sample_sp1024_caseops", out / "tokenizers" / "sample_1024_bpe_caseops.model"


def run(train_gpt, sample) -> dict:
    rec = load_record(train_gpt, record_dir() / "train_seed42.log")
    return {p.name: p for p in check_on(rec, RECIPES["pr1855"], *sample)}


def test_every_eval_piece_passes_or_is_a_declared_deviation_on_the_record(caseops_sample):
    pieces = run(record_dir() / "train_gpt.py", caseops_sample)
    assert {name: p.status for name, p in pieces.items()} == {
        "eval.val_tokens": "DEVIATION", "eval.val_bytes": "PASS", "eval.bpb": "PASS", "eval.ttt.adapter_sets": "PASS",
        "eval.ttt.doc_counts": "PASS", "eval.ttt.doc_losses": "PASS", "eval.ttt.bpb": "PASS"}, \
        "\n".join(p.line() for p in pieces.values())


@pytest.mark.parametrize("old,new,piece", [
    # a byte sidecar read one token off
    ("    return bytes_full[:expected_len].to(torch.int32)", "    return bytes_full[1:expected_len + 1].to(torch.int32)",
     "eval.val_bytes"),
    # chunks of the TTT windows: one token shorter
    ("    chunk_end = pred_len if ci == num_chunks - 1 else (ci + 1) * chunk_size",
     "    chunk_end = pred_len if ci == num_chunks - 1 else (ci + 1) * chunk_size - 1", "eval.ttt.doc_counts"),
    # the O adapter reads the attention output instead of the block input
    ("        if lora.o_loras is not None:\n            attn_out = attn_out + lora.o_loras[slot](n)\n"
     "        x_out = x_in", "        if lora.o_loras is not None:\n            attn_out = attn_out + lora.o_loras[slot](y)\n"
     "        x_out = x_in", "eval.ttt.doc_losses"),
    # a phase's attention not cut every eval_seq_len tokens from a document's start
    ("bos_pos, x_flat.numel(), x_flat.device, h.eval_seq_len, 64", "bos_pos, x_flat.numel(), x_flat.device, 0, 64",
     "eval.ttt.doc_losses"),
    # a phase trains on the last scored documents instead of the first
    ("    scored_docs_for_global.sort(key=lambda x: (x[0], x[1]))", "    scored_docs_for_global.sort(key=lambda x: (-x[0], x[1]))",
     "eval.ttt.doc_losses"),
])
def test_an_altered_record_fails_its_piece(tmp_path, caseops_sample, old, new, piece):
    pieces = run(altered_copy(tmp_path, old, new), caseops_sample)
    assert pieces[piece].status == "FAIL", pieces[piece].line()
