import dataclasses
import itertools

import torch

from golf.config import Config, smoke
from golf.model.attention import apply_partial_rope, rope_tables, sdpa_attention
from golf.model.blocks import BLOCKS, LaneMix, ParallelBlock
from golf.model.gpt import GPT, size_report, token_nll
from golf.model.loops import LOOP_SCHEDULES
from golf.params import assign_rules, param_rules
from golf.recipes import RECIPES

# 3 unique blocks: prelude 0, block 1 looped, coda 2 (two-lane).
TINY = dataclasses.replace(smoke(Config()), vocab_size=64, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=3,
                           rope_dims=4, train_seq_len=16, sw_seq_len=16, loop_start=1, loop_end=1, lane_layers=1)


def randomize(module: torch.nn.Module, std: float = 0.2) -> None:
    """Make every branch live (fresh blocks are identities)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=std)


def test_fresh_blocks_are_identity_on_the_residual():
    # Zero-initialised output projections and x0-mix (m0, m1) = (1, 0): a new block passes x through unchanged.
    for name, cls in BLOCKS.items():
        block = cls(TINY, sdpa_attention)
        assert torch.equal(block.resid_mix, torch.stack((torch.ones(32), torch.zeros(32)))), name
        x, x0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
        assert torch.equal(block(x, x0), x), name


def test_x0_mix_is_learned_per_channel():
    block = ParallelBlock(TINY, sdpa_attention)
    with torch.no_grad():
        block.resid_mix[1, 5] = 1.0  # channel 5 now also takes x0
    x, x0 = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    mixed = block.mix_x0(x, x0)
    assert torch.equal(mixed[..., 5], x[..., 5] + x0[..., 5])
    assert torch.equal(mixed[..., :5], x[..., :5])


def test_two_lane_layer_with_equal_lanes_and_fresh_mix_is_the_parallel_block():
    torch.manual_seed(0)
    block = ParallelBlock(TINY, sdpa_attention)
    randomize(block.attn)
    randomize(block.mlp)
    x, x0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    attn_lane, mlp_lane = block.forward_lanes((x, x), x0, LaneMix())
    expected = block(x, x0)
    assert torch.allclose(attn_lane, expected, atol=1e-6) and torch.allclose(mlp_lane, expected, atol=1e-6)
    # Once the lanes differ, the MLP reads its own lane: changing only the MLP lane changes the MLP output.
    attn_lane2, _ = block.forward_lanes((x, x + 1.0), x0, LaneMix())
    assert not torch.allclose(attn_lane2, attn_lane)


def test_model_is_causal():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(TINY, pass_adapter_rank=2, loop_enable_at=0.0)).eval()
    randomize(model)
    idx = torch.randint(0, 64, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 64
    a, b = model.logits(idx), model.logits(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_partial_rope_rotates_only_leading_dims_and_keeps_norm():
    cos, sin = rope_tables(8, 4, 10000.0)
    x = torch.randn(1, 2, 8, 16)
    y = apply_partial_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert torch.allclose(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])  # position 0: angle 0


def test_loss_starts_near_uniform_and_softcap_bounds_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx, targets = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    loss = model(idx, targets)
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.1
    assert model.token_losses(idx, targets).shape == (4, 16)
    # Softcap 30 bounds every logit: a huge logit gap costs at most 2 * 30 nats.
    huge = torch.tensor([[1e4, -1e4]])
    assert token_nll(huge, torch.tensor([1]), 30.0).item() <= 60.0 + 1e-3


def test_every_parameter_of_every_variant_matches_exactly_one_policy_row():
    # block type x loop schedule x per-pass adapters x U-Net skips x two-lane layers; assign_rules raises otherwise.
    for block, schedule, rank, skips, lanes in itertools.product(BLOCKS, LOOP_SCHEDULES, (0, 2), (False, True), (0, 1)):
        cfg = dataclasses.replace(TINY, block=block, loop_schedule=schedule, pass_adapter_rank=rank, unet_skips=skips,
                                  lane_layers=lanes, recur_max=4)
        model = GPT(cfg)
        rules = assign_rules(model.named_parameters(), param_rules(cfg))
        assert len(rules) == len(list(model.parameters()))
        assert {r.optim for n, r in rules.items() if not n.startswith("softcap_")} == {"muon", "adam"}
        assert all(r.optim == "none" for n, r in rules.items() if n.startswith("softcap_"))  # AsymLogit: untrained
        assert all(r.optim == "muon" for n, r in rules.items() if n.endswith(("q.weight", "fc.weight", "inject.weight")))
        assert all(r.optim == "adam" and r.bits is None for n, r in rules.items() if "skip_weights" in n or "lanes" in n)


def test_size_report_counts_shared_blocks_once_per_virtual_layer():
    cfg = dataclasses.replace(TINY, train_loops=3, eval_loops=5, loop_enable_at=0.0)
    model = GPT(cfg)
    report = size_report(model)
    per_block = sum(p.numel() for p in model.blocks[1].parameters())
    assert report["unique_params"] == sum(p.numel() for p in model.parameters())
    assert (report["train_depth"], report["eval_depth"]) == (2 + 3, 2 + 5)
    assert report["effective_params"] == report["unique_params"] + 4 * per_block


# ---- the frontier pieces (issue 13)
from golf.data import BOS_ID, document_ids  # noqa: E402
from golf.model.attention import CausalSelfAttention, exclude_self_value  # noqa: E402
from golf.model.gpt import SmearGate  # noqa: E402


def test_record_dims_have_the_records_parameter_count():
    with torch.device("meta"):
        model = GPT(RECIPES["pr1855"])
    # The 1.0611 record (recipe pr1855) logs model_params:35945671; it also allocates lane weights for blocks 0-7 that never run
    # (parallel_post_lambdas (11, 2, 2) + parallel_resid_lambdas (11, 2)); golf keeps only the 3 used.
    unused_in_record = 8 * (4 + 2)
    assert sum(p.numel() for p in model.parameters()) + unused_in_record == 35_945_671


def test_smear_gate_starts_as_identity_and_never_crosses_a_bos():
    torch.manual_seed(0)
    gate = SmearGate(12)
    x = torch.randn(1, 6, 32)
    idx = torch.tensor([[BOS_ID, 5, 6, BOS_ID, 7, 8]])
    assert torch.equal(gate(x, idx), x)  # lam = 0, w = 0
    with torch.no_grad():
        gate.lam.fill_(1.0)
        gate.weight.normal_()
    out = gate(x, idx)
    assert not torch.allclose(out[:, 4], x[:, 4])  # inside a document the previous token smears in
    other = x.clone()
    other[:, :3] = torch.randn(1, 3, 32)  # change the whole previous document
    out2 = gate(other, idx)
    assert torch.equal(out2[:, 3:], out[:, 3:])  # the BOS at 3 and its document do not see it
    assert torch.equal(out[:, 3], x[:, 3])


def test_xsa_output_has_no_component_along_its_own_value():
    torch.manual_seed(0)
    y, v = torch.randn(2, 4, 8, 16), torch.randn(2, 2, 8, 16)
    out = exclude_self_value(y, v)
    vn = torch.nn.functional.normalize(v, dim=-1).repeat_interleave(2, dim=1)
    assert (out * vn).sum(-1).abs().max() < 1e-5
    assert torch.allclose(out + (y * vn).sum(-1, keepdim=True) * vn, y, atol=1e-6)


def test_zero_init_sparse_attn_gate_halves_every_head_and_learns_per_head():
    torch.manual_seed(0)
    plain = CausalSelfAttention(32, 4, 2, 4, 1e4, 5.0, 16)
    gated = CausalSelfAttention(32, 4, 2, 4, 1e4, 5.0, 16, gate_window=12, gate_scale=0.5)
    torch.nn.init.normal_(plain.proj.weight)  # live output projection
    missing, _ = gated.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["gate"]
    x = torch.randn(2, 16, 32)
    assert torch.allclose(gated(x), 0.5 * plain(x), atol=1e-6)  # sigmoid(0) on every head
    with torch.no_grad():
        gated.gate[1].normal_()
    assert not torch.allclose(gated(x), 0.5 * plain(x), atol=1e-4)


def test_frontier_block_pieces_at_init():
    cfg = RECIPES["pr1855"]
    model_cfg = dataclasses.replace(TINY, num_layers=3)
    blocks = GPT(model_cfg).blocks
    assert [b.norm_scale for b in blocks] == [1.0, 1 / 2**0.5, 1 / 3**0.5]  # LN scale 1/sqrt(layer + 1)
    assert all(b.attn.xsa for b in blocks)  # xsa_last_n 11 >= 3: every layer
    q, fc = blocks[0].attn.q.weight, blocks[0].mlp.fc.weight  # orthogonal init, zero out/down
    assert torch.allclose(q @ q.T, torch.eye(32), atol=1e-5) and torch.allclose(fc.T @ fc, torch.eye(32), atol=1e-5)
    assert not blocks[0].attn.proj.weight.any() and not blocks[0].mlp.proj.weight.any()
    assert cfg.qk_gain_init == 5.0 and torch.all(blocks[0].attn.q_gain == TINY.qk_gain_init)


def test_record_lanes_keep_the_raw_lane_at_1_1():
    torch.manual_seed(0)
    block = BLOCKS["sequential"](TINY, sdpa_attention)
    with torch.no_grad():
        block.resid_mix[1].fill_(1.0)  # x0 feeds the attention read
    x, x0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    lanes = block.forward_lanes((x, x), x0, LaneMix(TINY.lane_keep_init))
    # Fresh block (zero out-projections): each lane is 1.1 * its own raw lane, x0 never enters the residual.
    assert torch.allclose(lanes[0], 1.1 * x) and torch.allclose(lanes[1], 1.1 * x)
    golf = BLOCKS["sequential"](dataclasses.replace(TINY, lane_x0_residual=True), sdpa_attention)
    golf.load_state_dict(block.state_dict())
    assert torch.allclose(golf.forward_lanes((x, x), x0, LaneMix(1.0))[0], x + x0)


def test_gated_skips_pair_like_the_record():
    record = dataclasses.replace(Config(), model_dim=32, num_heads=4, num_kv_heads=2, vocab_size=64)
    schedule = GPT(record).schedule
    assert schedule.skip_weights.shape == (8, 32) and torch.all(schedule.skip_weights == 1)
    assert not schedule.skip_gates.any()
    # encoder [0..depth//2), decoder layer depth//2 + j reads encoder layer depth//2 - 1 - j (a stack)
    assert schedule.skip_pairing(17) == (8, 8)  # looping: encoder [0,1,2,3,4,5,3,4]
    assert schedule.skip_pairing(11) == (5, 5)  # before looping: encoder blocks 0-4, decoder 5-10
    x, skip = torch.randn(3, 32), torch.randn(3, 32)
    assert torch.allclose(schedule.join_skip(x, skip, 8, 17, 8), 0.5 * x + 0.5 * skip)  # sigmoid(0) lerp, w = 1


def test_document_ids_step_at_bos():
    tokens = torch.tensor([[5, BOS_ID, 6, 7, BOS_ID, 8], [BOS_ID, 4, 4, 4, 4, 4]])
    assert document_ids(tokens).tolist() == [[0, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1]]


def test_document_loss_is_the_same_packed_after_another_document_or_alone():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(TINY, loop_enable_at=0.0)).eval()  # every frontier piece on, looped
    randomize(model)
    with torch.no_grad():
        model.smear.lam.fill_(1.0)
    doc_a = torch.tensor([BOS_ID, 9, 10, 11, 12, 13, 14])
    doc_b = torch.tensor([BOS_ID, 20, 21, 22, 23, 24, 25, 26, 27])
    packed = torch.cat((doc_a, doc_b))[None]
    alone = torch.cat((doc_b, torch.tensor([30] * 7)))[None]  # same row length; B first
    a, n = len(doc_a), len(doc_b)
    packed_nll = model.token_losses(packed[:, :-1], packed[:, 1:])[0, a : a + n - 1]
    alone_nll = model.token_losses(alone[:, :-1], alone[:, 1:])[0, : n - 1]
    assert torch.allclose(packed_nll, alone_nll, atol=1e-5), (packed_nll - alone_nll).abs().max()
    # Without doc isolation the first document leaks into the second.
    leaky = GPT(dataclasses.replace(TINY, loop_enable_at=0.0, doc_attention=False)).eval()
    leaky.load_state_dict(model.state_dict())
    leak = leaky.token_losses(packed[:, :-1], packed[:, 1:])[0, a : a + n - 1]
    assert not torch.allclose(leak, alone_nll, atol=1e-3)
