"""Each Triton kernel against its plain-torch twin: values and gradients.

Without CUDA the kernels run in Triton's interpreter (fp32, small shapes: it is slow). With
CUDA they run compiled, in fp32 (tight tolerances: dots are ieee) and bf16 (the kernel's error
against an fp32 reference may be at most ~2x the twin's own bf16 error).
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

# The interpreter must be chosen before any @triton.jit runs, i.e. before golf.kernels imports.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from golf.config import GolfError  # noqa: E402
from golf.kernels.attention import ATTENTION_BACKENDS, select_attention  # noqa: E402
from golf.kernels.attention_triton import attention_torch, flash_attention  # noqa: E402
from golf.kernels.mlp_act import leaky_relu_sq, leaky_relu_sq_torch, leaky_relu_sq_triton  # noqa: E402
from golf.kernels.softcap_ce import (  # noqa: E402
    softcap_cross_entropy,
    softcap_cross_entropy_torch,
    softcap_cross_entropy_triton,
)
from golf.kernels.triton_support import TRITON_AVAILABLE, triton_interpreting  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if DEVICE == "cuda" else [torch.float32]
needs_triton = pytest.mark.skipif(not TRITON_AVAILABLE, reason="triton not installed (optional [gpu] extra)")


def values_and_grads(fn, inputs, grad_out_seed=0):
    """fn(*inputs) and d(sum(out * g))/d inputs for a fixed random g; inputs are leaf copies."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    gen = torch.Generator(device=out.device).manual_seed(grad_out_seed)
    grad_out = torch.randn(out.shape, generator=gen, device=out.device, dtype=torch.float32).to(out.dtype)
    grads = torch.autograd.grad(out, [x for x in leaves if x.requires_grad], grad_out)
    return [out.detach(), *grads]


def assert_matches_twin(kernel, twin, inputs):
    """Kernel vs twin on the same inputs, values and gradients.

    fp32: 1e-4 relative to each tensor's scale, with a 1e-6 floor for tensors that are exactly zero
    in exact arithmetic (dq and dk at T = 1) and so hold only rounding noise. Low precision: the kernel's error against the twin
    run in fp32 is at most 2x the twin's own low-precision error (plus a small floor).
    """
    got = values_and_grads(kernel, inputs)
    if inputs[0].dtype == torch.float32:
        for g, w in zip(got, values_and_grads(twin, inputs)):
            scale = w.abs().max().item() + 1e-6
            assert (g - w).abs().max().item() <= 1e-4 * scale + 1e-6, f"max err {(g - w).abs().max().item()} (scale {scale})"
        return
    reference = values_and_grads(twin, [x.float() if x.is_floating_point() else x for x in inputs])
    twin_low = values_and_grads(twin, inputs)
    for g, w, r in zip(got, twin_low, reference):
        kernel_err = (g.float() - r).abs().max().item()
        twin_err = (w.float() - r).abs().max().item()
        assert kernel_err <= 2 * twin_err + 1e-3 * r.abs().max().item(), f"kernel err {kernel_err}, twin err {twin_err}"


def test_kernels_run_interpreted_without_cuda():
    # Guards the import-order trap: if some module imported golf.kernels before this file set
    # TRITON_INTERPRET, the kernels were compiled for a GPU and every kernel test would crash.
    if DEVICE == "cpu" and TRITON_AVAILABLE:
        from triton.runtime.interpreter import InterpretedFunction

        from golf.kernels.softcap_ce import softcap_ce_fwd_kernel

        assert triton_interpreting()
        assert isinstance(softcap_ce_fwd_kernel, InterpretedFunction), (
            "golf.kernels was imported before TRITON_INTERPRET=1 was set; set it in the environment")


# ---------------------------------------------------------------- softcapped cross-entropy

@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_rows,vocab,block_v,logit_scale", [
    (1, 17, 16, 1.0),      # V one past the chunk
    (7, 100, 32, 10.0),    # V not a multiple of the chunk; logits near the cap
    (13, 300, 64, 200.0),  # saturated tanh: z = +-softcap exactly
    (4, 64, 64, 3.0),      # V equal to the chunk
])
def test_softcap_ce_matches_twin(n_rows, vocab, block_v, logit_scale, dtype):
    gen = torch.Generator().manual_seed(n_rows * 1000 + vocab)
    logits = (torch.randn(n_rows, vocab, generator=gen) * logit_scale).to(DEVICE, dtype)
    targets = torch.randint(0, vocab, (n_rows,), generator=gen).to(DEVICE)
    assert_matches_twin(lambda x, y: softcap_cross_entropy_triton(x, y, 30.0, block_v=block_v),
                        lambda x, y: softcap_cross_entropy_torch(x, y, 30.0), [logits, targets])


def test_softcap_ce_twin_is_cross_entropy_of_capped_logits():
    logits = torch.tensor([[0.0, 60.0, -60.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([1, 0])
    capped = 30.0 * torch.tanh(logits / 30.0)
    expected = torch.logsumexp(capped, -1) - capped[torch.arange(2), targets]
    losses = softcap_cross_entropy_torch(logits, targets, 30.0)
    assert losses.dtype == torch.float32 and losses.shape == (2,)
    torch.testing.assert_close(losses, expected)


def test_softcap_ce_public_uses_twin_off_cuda():
    logits, targets = torch.randn(5, 11), torch.randint(0, 11, (5,))
    got = softcap_cross_entropy(logits, targets, 15.0)
    assert torch.equal(got, softcap_cross_entropy_torch(logits, targets, 15.0))


# ---------------------------------------------------------------- flash attention

@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,heads,kv_heads,seq_len,head_dim,block_m,block_n", [
    (1, 2, 2, 1, 16, 16, 16),      # T = 1, GQA ratio 1
    (2, 4, 2, 17, 16, 16, 16),     # T one past a tile, ratio 2
    (1, 4, 1, 100, 32, 32, 16),    # ratio 4, BLOCK_M > BLOCK_N
    (1, 2, 1, 100, 16, 16, 64),    # BLOCK_N > BLOCK_M: kv tiles straddle the diagonal
    (1, 2, 2, 64, 64, 64, 32),     # head dim 64, T a multiple of the tile
])
def test_flash_attention_matches_twin(batch, heads, kv_heads, seq_len, head_dim, block_m, block_n, dtype):
    gen = torch.Generator().manual_seed(seq_len * 100 + heads * 10 + kv_heads)
    q = torch.randn(batch, heads, seq_len, head_dim, generator=gen).to(DEVICE, dtype)
    k = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen).to(DEVICE, dtype)
    v = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen).to(DEVICE, dtype)
    assert_matches_twin(lambda q, k, v: flash_attention(q, k, v, block_m=block_m, block_n=block_n), attention_torch, [q, k, v])


@needs_triton
def test_flash_attention_takes_transposed_views():
    # The model projects to (B, T, H, D) and transposes: the kernel must not assume contiguity.
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 23, 4, 16, generator=gen).to(DEVICE).transpose(1, 2)
    k = torch.randn(1, 23, 2, 16, generator=gen).to(DEVICE).transpose(1, 2)
    v = torch.randn(1, 23, 2, 16, generator=gen).to(DEVICE).transpose(1, 2)
    assert not q.is_contiguous()
    assert_matches_twin(lambda q, k, v: flash_attention(q, k, v, block_m=16, block_n=16), attention_torch, [q, k, v])


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_attention_with_document_ids_matches_block_diagonal_twin(dtype):
    # Documents of 5, 19, 1 and 15 tokens in row 0 (one starts mid-tile, one is a single token); row 1 is
    # one document. Tiles of 16 straddle every boundary, so whole tiles are hidden from some rows.
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, 4, 40, 16, generator=gen).to(DEVICE, dtype)
    k = torch.randn(2, 2, 40, 16, generator=gen).to(DEVICE, dtype)
    v = torch.randn(2, 2, 40, 16, generator=gen).to(DEVICE, dtype)
    doc_ids = torch.tensor([[0] * 5 + [1] * 19 + [2] + [3] * 15, [4] * 40], device=DEVICE)
    assert_matches_twin(lambda q, k, v: flash_attention(q, k, v, doc_ids, block_m=16, block_n=16),
                        lambda q, k, v: attention_torch(q, k, v, doc_ids), [q, k, v])


def test_document_mask_twin_is_attention_within_each_document():
    gen = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(1, 2, 10, 8, generator=gen), torch.randn(1, 1, 10, 8, generator=gen), torch.randn(1, 1, 10, 8, generator=gen)
    doc_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
    out = attention_torch(q, k, v, doc_ids)
    torch.testing.assert_close(out[:, :, :4], attention_torch(q[:, :, :4], k[:, :, :4], v[:, :, :4]))
    torch.testing.assert_close(out[:, :, 4:], attention_torch(q[:, :, 4:], k[:, :, 4:], v[:, :, 4:]))


def test_varlen_boundaries_split_rows_and_documents():
    from golf.kernels.attention import varlen_boundaries

    doc_ids = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 2, 2]])  # row 1 starts a new segment even with the same id
    assert varlen_boundaries(doc_ids).tolist() == [0, 2, 5, 8, 10]


def test_attention_twin_is_causal_and_grouped():
    # Output row t must not change when tokens after t change; head h reads kv head h // 2.
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(1, 4, 9, 8, generator=gen), torch.randn(1, 2, 9, 8, generator=gen), torch.randn(1, 2, 9, 8, generator=gen)
    out = attention_torch(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5:], v2[:, :, 5:] = 7.0, -7.0
    torch.testing.assert_close(attention_torch(q, k2, v2)[:, :, :5], out[:, :, :5])
    expanded = attention_torch(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    torch.testing.assert_close(out, expanded)


# ---------------------------------------------------------------- backend selection

def test_select_attention_falls_back_to_sdpa_on_cpu():
    for prefer in ("auto", "fa3", "triton", "sdpa"):
        name, fn = select_attention("cpu", prefer=prefer)
        assert name == "sdpa" and fn is attention_torch


def test_select_attention_rejects_unknown_name():
    with pytest.raises(GolfError, match="flash2"):
        select_attention("cpu", prefer="flash2")


def test_selected_attention_computes_causal_gqa_attention():
    name, fn = select_attention(DEVICE)
    assert name in ATTENTION_BACKENDS
    gen = torch.Generator().manual_seed(2)
    dtype = torch.bfloat16 if name == "fa3" else torch.float32  # FA3 takes half precision only
    q = torch.randn(2, 4, 33, 64, generator=gen).to(DEVICE, dtype)
    k = torch.randn(2, 2, 33, 64, generator=gen).to(DEVICE, dtype)
    v = torch.randn(2, 2, 33, 64, generator=gen).to(DEVICE, dtype)
    out = fn(q, k, v)
    assert out.shape == q.shape
    torch.testing.assert_close(out.float(), attention_torch(q.float(), k.float(), v.float()),
                               atol=2e-2 if dtype == torch.bfloat16 else 1e-4, rtol=1e-2)


# ---------------------------------------------------------------- LeakyReLU(0.5)^2

@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,block", [((1,), 16), ((3, 37), 32), ((2, 5, 64), 64)])
def test_leaky_relu_sq_matches_twin(shape, block, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(DEVICE, dtype)
    x.view(-1)[0] = 0.0  # the kink
    assert_matches_twin(lambda x: leaky_relu_sq_triton(x, block), leaky_relu_sq_torch, [x])


def test_leaky_relu_sq_twin_values():
    x = torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(leaky_relu_sq_torch(x), torch.tensor([1.0, 0.0, 9.0]))
    assert torch.equal(leaky_relu_sq(x), leaky_relu_sq_torch(x))


def test_kernels_import_without_triton():
    # triton is an optional extra: without it, importing works and the twins serve every call.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from golf.kernels.triton_support import TRITON_AVAILABLE\n"
        "from golf.kernels.attention import select_attention\n"
        "from golf.kernels.softcap_ce import softcap_cross_entropy\n"
        "from golf.kernels.mlp_act import leaky_relu_sq\n"
        "assert not TRITON_AVAILABLE\n"
        "assert select_attention('cpu')[0] == 'sdpa'\n"
        "print(softcap_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]), 30.0).tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[1.3862943649291992,", "1.3862943649291992]"]  # ln 4 each
