"""The static audit on files written for these tests: each illegal pattern FAILs its check at its line, each legal
score-first TTT style passes every check; shims are unpacked without running them."""

import base64
import json
import lzma
import os
import sys
import zlib
from pathlib import Path

import brotli
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from audit import main  # noqa: E402
from golf.static_audit import AuditInputError, audit_file, decode_payload, requote_fstrings  # noqa: E402
from tools.pack import COMPRESSORS, loader, lzma_pack  # noqa: E402

# Training code every synthetic file shares: a train loader and a training loop (must never be flagged).
PRELUDE = '''
import copy, glob, os, urllib.request
import torch

DATA = os.environ.get("DATA_PATH", "./data")


def train(model, opt, steps):
    loader = TokenLoader(os.path.join(DATA, "fineweb_train_*.bin"))
    for step in range(steps):
        x, y = loader.next_batch()
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main():
    val_tokens = load_validation_tokens(os.path.join(DATA, "fineweb_val_*.bin"))
    model = GPT()
    opt = torch.optim.AdamW(model.parameters())
    train(model, opt, 100)
    print(evaluate(model, opt, val_tokens))
'''

# Each illegal file: the `evaluate` the prelude calls; MARK is on the line the check must report.
MARK = "# <- here"
ILLEGAL = {
    "pre_quant_ttt": ("val_update", '''
def evaluate(model, opt, val_tokens):
    for i in range(0, val_tokens.numel() - 1, 2048):
        chunk = val_tokens[i:i + 2049]
        loss = model(chunk[:-1], chunk[1:])
        opt.zero_grad()
        loss.backward()  # <- here
        opt.step()
    with torch.no_grad():
        return model(val_tokens[:-1], val_tokens[1:]).mean()
'''),
    "diagnostic_eval_then_ttt_then_final_eval": ("val_update", '''
def ttt_adapt(model, opt, tokens):
    for i in range(0, tokens.numel() - 1, 2048):
        loss = model(tokens[i:i + 2048], tokens[i + 1:i + 2049])
        loss.backward()  # <- here
        opt.step()


@torch.no_grad()
def eval_val(model, tokens):
    return model(tokens[:-1], tokens[1:]).mean()


def evaluate(model, opt, val_tokens):
    print("pre-quant", eval_val(model, val_tokens))
    ttt_adapt(model, opt, val_tokens)
    return eval_val(quantize(model), val_tokens)
'''),
    "adapt_before_score": ("val_update", '''
def evaluate(model, opt, val_tokens):
    total = 0.0
    for i in range(0, val_tokens.numel() - 1, 2048):
        chunk = val_tokens[i:i + 2049]
        model(chunk[:-1], chunk[1:]).mean().backward()  # <- here
        opt.step()
        with torch.no_grad():
            total += model(chunk[:-1], chunk[1:]).sum().item()
    return total
'''),
    "compile_warmup_on_val": ("val_update", '''
def evaluate(model, opt, val_tokens):
    compiled = torch.compile(model)
    for step in range(20):  # warm the compiled graph up on val tokens
        x = val_tokens[step * 2048:(step + 1) * 2048 + 1]
        compiled(x[:-1], x[1:]).backward()  # <- here
        opt.step()
    with torch.no_grad():
        return compiled(val_tokens[:-1], val_tokens[1:]).mean()
'''),
    "gptq_calibrates_on_val": ("val_update", '''
def collect_hessians(model, tokens):
    hessians = {}
    def hook(module, inputs, output):
        x = inputs[0].flatten(0, 1)
        hessians[module] = hessians.get(module, 0) + x.T @ x
    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(tokens.view(-1, 2048))
    return hessians


def evaluate(model, opt, val_tokens):
    hessians = collect_hessians(model, val_tokens[:16 * 2048])  # <- here
    quantized = gptq_quantize(model, hessians)
    with torch.no_grad():
        return quantized(val_tokens[:-1], val_tokens[1:]).mean()
'''),
    "val_into_persistent_state": ("val_update", '''
def evaluate(model, opt, val_tokens):
    model.unigram_prior.copy_(torch.bincount(val_tokens, minlength=8192).float().log())  # <- here
    with torch.no_grad():
        return model(val_tokens[:-1], val_tokens[1:]).mean()
'''),
    "epochs_over_val": ("epochs", '''
def evaluate(model, opt, val_tokens):
    chunks = val_tokens.split(32768)
    for epoch in range(3):  # <- here
        for chunk in chunks:
            loss = model(chunk[:-1], chunk[1:])
            loss.backward()
            opt.step()
    with torch.no_grad():
        return model(val_tokens[:-1], val_tokens[1:]).mean()
'''),
    "prequant_ttt_epochs_behind_a_flag_on_by_default": ("epochs", '''
PREQUANT_TTT_ENABLED = bool(int(os.environ.get("PREQUANT_TTT_ENABLED", "1")))


def prequant_ttt_adapt(h, base_model, device, val_tokens, rank=0, world_size=1):
    optimizer = torch.optim.AdamW(base_model.parameters(), lr=h.lr)
    for epoch in range(h.epochs):  # <- here
        for bs in range(rank, (val_tokens.numel() - 1) // 2048, world_size):
            local = val_tokens[bs * 2048:bs * 2048 + 2049].to(device=device, dtype=torch.int64)
            x, y = local[:-1].reshape(-1, 2048), local[1:].reshape(-1, 2048)
            optimizer.zero_grad(set_to_none=True)
            loss = base_model(x, y)
            loss.backward()
            optimizer.step()


def evaluate(model, opt, val_tokens):
    data = ValidationData(val_tokens)
    if PREQUANT_TTT_ENABLED:
        prequant_ttt_adapt(HP, model, "cuda", data.val_tokens)
    with torch.no_grad():
        return model(val_tokens[:-1], val_tokens[1:]).mean()
'''),
    "epochs_rescore": ("epochs", '''
def evaluate(model, opt, val_tokens):
    total = 0.0
    for epoch in range(2):  # <- here
        for chunk in val_tokens.split(32768):
            with torch.no_grad():
                total += model(chunk[:-1], chunk[1:]).sum().item()
            model(chunk[:-1], chunk[1:]).mean().backward()
            opt.step()
    return total
'''),
    "best_of_two_scores": ("best_of", '''
def evaluate(model, opt, val_tokens):
    total = 0.0
    for chunk in val_tokens.split(32768):
        with torch.no_grad():
            loss_before = model(chunk[:-1], chunk[1:]).sum()
        model(chunk[:-1], chunk[1:]).mean().backward()
        opt.step()
        with torch.no_grad():
            loss_after = model(chunk[:-1], chunk[1:]).sum()
        total += min(loss_before, loss_after)  # <- here
    return total
'''),
    "ngram_counts_target_first": ("target_key", '''
def evaluate(model, opt, val_tokens):
    table = torch.zeros(1 << 20)
    nll = 0.0
    for t in range(1, val_tokens.numel()):
        prev, target = val_tokens[t - 1], val_tokens[t]
        table[(prev * 8191 + target) % (1 << 20)] += 1  # <- here
        with torch.no_grad():
            p = table[(prev * 8191 + target) % (1 << 20)] / t
        nll -= torch.log(p)
    return nll
'''),
    "mixture_not_normalised": ("mixture", '''
def evaluate(model, opt, val_tokens):
    x, y = val_tokens[:-1], val_tokens[1:]
    buckets = torch.ones(1 << 20)
    with torch.no_grad():
        p_model = torch.softmax(model(x), -1).gather(-1, y[:, None])[:, 0]
        p_cache = buckets[(x * 8191 + y) % (1 << 20)] / (buckets.sum() + 1)
        p_mix = 0.9 * p_model + 0.1 * p_cache
        return -torch.log(p_mix).mean()  # <- here
'''),
    "network_on_eval_path": ("eval_io", '''
def evaluate(model, opt, val_tokens):
    with torch.no_grad():
        loss = model(val_tokens[:-1], val_tokens[1:]).mean()
    urllib.request.urlopen("http://example.com/?loss=%f" % loss)  # <- here
    return loss
'''),
    "train_shards_on_eval_path": ("eval_io", '''
def evaluate(model, opt, val_tokens):
    extra = glob.glob(os.path.join(DATA, "fineweb_train_*.bin"))  # <- here
    with torch.no_grad():
        return model(val_tokens[:-1], val_tokens[1:]).mean() + len(extra)
'''),
    # The patterns tools/audit.py's first static checks were written for (kept when they moved here).
    "legacy_val_in_training_step": ("val_update", '''
def evaluate(model, opt, val_tokens):
    x = val_tokens[:-1].view(-1, 1024)
    loss = model(x, x)
    loss.backward()  # <- here
'''),
    "legacy_epoch_loop_over_chunks": ("epochs", '''
def evaluate(model, opt, val_tokens):
    for epoch in range(3):  # <- here
        for chunk in val_tokens.split(32768):
            score(chunk)
            adapt(chunk)
'''),
    "legacy_min_over_seeds": ("best_of", '''
def evaluate(model, opt, val_tokens):
    results = [eval_bpb(model, val_tokens, seed=s) for s in range(3)]
    return min(r.val_bpb for r in results)  # <- here
'''),
}

# Legal score-first TTT, one file per style the records use.
LEGAL = {
    "single_stream": '''
@torch.no_grad()
def score_chunk(model, tokens):
    return model(tokens[:-1], tokens[1:]).sum()


def adapt(model, opt, tokens, epochs):
    for epoch in range(epochs):
        loss = model(tokens[:-1], tokens[1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def evaluate(model, opt, val_tokens):
    total = 0.0
    for i in range(0, val_tokens.numel() - 1, 32768):
        part = val_tokens[i:i + 32769]
        total += score_chunk(model, part)
        adapt(model, opt, part, epochs=3)
    return total
''',
    "single_stream_step_per_call": '''
def ttt_step(model, opt, chunk):
    with torch.no_grad():
        nll = model(chunk[:-1], chunk[1:]).sum()
    model(chunk[:-1], chunk[1:]).mean().backward()
    opt.step()
    return nll


def evaluate(model, opt, val_tokens):
    return sum(ttt_step(model, opt, c) for c in val_tokens.split(32768))
''',
    "per_document_lora": '''
def evaluate(model, opt, val_tokens):
    docs = find_docs(val_tokens)
    nll_sum = torch.zeros(())
    for start, length in docs:
        lora = LoRA(model, rank=8)
        lora_opt = torch.optim.Adam(lora.parameters(), lr=1e-3)
        doc = val_tokens[start:start + length]
        for c in range(0, length - 1, 48):
            x, y = doc[c:c + 48], doc[c + 1:c + 49]
            per_tok = model(x, y, lora=lora)
            with torch.no_grad():
                nll_sum += per_tok.sum()
            lora_opt.zero_grad()
            per_tok.mean().backward()
            lora_opt.step()
    return nll_sum
''',
    "phased_global": '''
def global_sgd(model, tokens, epochs):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(epochs):
        for i in range(0, tokens.numel() - 1, 2048):
            chunk = tokens[i:i + 2049]
            loss = model(chunk[:-1], chunk[1:])
            opt.zero_grad()
            loss.backward()
            opt.step()


def evaluate(model, opt, val_tokens):
    docs = find_docs(val_tokens)
    phases = [docs[: len(docs) // 3], docs[len(docs) // 3:]]
    nll_sum, scored = 0.0, []
    for phase_docs in phases:
        for start, length in phase_docs:
            doc = val_tokens[start:start + length]
            with torch.inference_mode():
                nll_sum += model(doc[:-1], doc[1:]).sum().item()
            scored.append(doc)
        global_sgd(model, torch.cat(scored), epochs=2)
    return nll_sum
''',
}


def write(tmp_path: Path, name: str, body: str) -> tuple[Path, int]:
    text = PRELUDE + body
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if MARK in line]
    return path, lines[0] if lines else 0


def not_passing(report: dict) -> list[dict]:
    return [c for c in report["checks"] if c["verdict"] != "PASS"]


def verdicts(report: dict) -> dict:
    return {c["check"]: c for c in report["checks"]}


@pytest.mark.parametrize("name", ILLEGAL)
def test_each_illegal_pattern_fails_its_check_at_its_line(tmp_path, name):
    check, body = ILLEGAL[name]
    path, line = write(tmp_path, name, body)
    result = verdicts(audit_file(path))
    assert result[check]["verdict"] == "FAIL", result[check]
    assert line in [f["line"] for f in result[check]["findings"] if f["verdict"] == "FAIL"], result[check]
    others = [k for k, c in result.items() if k != check and c["verdict"] != "PASS"]
    assert not others, [result[k] for k in others]


def test_a_failing_update_names_its_taint_path(tmp_path):
    path, line = write(tmp_path, "pre_quant_ttt", ILLEGAL["pre_quant_ttt"][1])
    finding = verdicts(audit_file(path))["val_update"]["findings"][0]
    assert "loss.backward()" in finding["message"]
    assert any("val_tokens" in step for step in finding["taint_path"]), finding["taint_path"]
    assert any(step.startswith("loss <- line") for step in finding["taint_path"]), finding["taint_path"]


THROWAWAY_WARMUP = '''
def evaluate(model, opt, val_tokens):
    for p in model.parameters():
        p.requires_grad_(False)
    for ctx_len in (48, 2048):  # compile warm-up of the TTT step on val tokens, with a throwaway adapter
        wl = LoRA(model, rank=8)
        wo = torch.optim.AdamW(wl.parameters(), lr=1e-4)
        xw = val_tokens[:ctx_len]
        model(xw[:-1], xw[1:], lora=wl).mean().backward()  # <- here
        wo.step()
        del wl, wo
    with torch.no_grad():
        return model(val_tokens[:-1], val_tokens[1:]).mean()
'''


@pytest.mark.parametrize("how", ["reloaded", "deleted"])
def test_a_warm_up_whose_state_is_thrown_away_warns(tmp_path, how):
    body = THROWAWAY_WARMUP if how == "deleted" else ILLEGAL["compile_warmup_on_val"][1].replace(
        "    compiled = torch.compile(model)\n",
        "    compiled = torch.compile(model)\n    initial = copy.deepcopy(model.state_dict())\n").replace(
        "    with torch.no_grad():\n", "    model.load_state_dict(initial)\n    with torch.no_grad():\n")
    path, line = write(tmp_path, "warmup_" + how, body)
    result = verdicts(audit_file(path))["val_update"]
    assert result["verdict"] == "WARN" and result["findings"][0]["line"] == line, result
    assert "reloaded or deleted at line" in result["findings"][0]["message"]


@pytest.mark.parametrize("name", LEGAL)
def test_each_legal_score_first_style_passes(tmp_path, name):
    path, _ = write(tmp_path, name, LEGAL[name])
    report = audit_file(path)
    assert not not_passing(report), not_passing(report)
    assert report["score_first"], "the score-first structure should be recognised and reported"


def test_a_cache_read_before_its_update_passes(tmp_path):
    body = ILLEGAL["ngram_counts_target_first"][1]
    update = "        table[(prev * 8191 + target) % (1 << 20)] += 1  # <- here\n"
    body = body.replace(update, "").replace("        nll -= torch.log(p)\n", "        nll -= torch.log(p)\n" + update)
    path, _ = write(tmp_path, "ngram_score_first", body)
    assert verdicts(audit_file(path))["target_key"]["verdict"] == "PASS"


SHIMS = {  # name: (how the report names the decoded unit, the shim's bytes for a source)
    "lzma+base85": ("lzma+base85", lambda src: f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("'
                                               f'{base64.b85encode(lzma.compress(src)).decode()}")))\n'.encode()),
    "brotli+base64": ("brotli+base64", lambda src: f'import brotli,base64\nexec(brotli.decompress(base64.b64decode('
                                                   f'"{base64.b64encode(brotli.compress(src)).decode()}")).decode())\n'
                                                   .encode()),
    "zlib+base85": ("zlib+base85", lambda src: f'import zlib,base64\n_c = zlib.decompress(base64.b85decode('
                                               f'"{base64.b85encode(zlib.compress(src)).decode()}"))\n'
                                               'exec(compile(_c, "x", "exec"))\n'.encode()),
    # golf's shipped form before issue 24: .lzma ("alone") format in base85
    "golf-lzma-alone+base85": ("lzma+base85", lambda src: (
        "import base64, linecache, lzma, sys, traceback\n_packed_source = lzma.decompress(base64.b85decode("
        f'"{base64.b85encode(lzma_pack(src)).decode()}")).decode()\n'
        'exec(compile(_packed_source, __file__, "exec"))\n').encode()),
    # golf's shipped form since: a Latin-1 file holding the compressed bytes in a string literal
    "golf-brotli+latin-1": ("brotli+latin-1", lambda src: loader("brotli", COMPRESSORS["brotli"](src))),
    "golf-lzma+latin-1": ("lzma+latin-1", lambda src: loader("lzma", COMPRESSORS["lzma"](src))),
}


@pytest.mark.parametrize("shim", SHIMS)
def test_a_shim_is_unpacked_and_its_source_audited(tmp_path, shim):
    inner, line = write(tmp_path, "inner", ILLEGAL["adapt_before_score"][1])
    path = tmp_path / "train_gpt.py"
    how, build = SHIMS[shim]
    path.write_bytes(build(inner.read_bytes()))
    report = audit_file(path)
    assert any(u.startswith(f"{how} literal at") for u in report["units"]), report["units"]
    finding = verdicts(report)["val_update"]["findings"][0]
    assert finding["verdict"] == "FAIL" and finding["line"] == line and finding["source"].startswith(how)


def test_files_are_read_in_their_declared_encoding(tmp_path):
    inner, line = write(tmp_path, "inner", ILLEGAL["adapt_before_score"][1])
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# coding: latin-1\n" + "# caf\xe9\n".encode("latin-1") + inner.read_bytes())
    assert verdicts(audit_file(latin))["val_update"]["findings"][0]["line"] == line + 2
    broken = tmp_path / "broken.py"
    broken.write_bytes(b"x = '\xff'\n")  # no coding line: UTF-8, which this is not
    with pytest.raises(AuditInputError, match=r"broken.py: cannot read as Python source text"):
        audit_file(broken)


def test_exec_of_a_sibling_file_is_followed(tmp_path):
    inner, line = write(tmp_path, "train_gpt_decode", ILLEGAL["pre_quant_ttt"][1])
    shim = tmp_path / "train_gpt.py"
    shim.write_text('exec(open(__file__.replace("train_gpt.py","train_gpt_decode.py")).read())\n')
    finding = verdicts(audit_file(shim))["val_update"]["findings"][0]
    assert finding["line"] == line and finding["source"].startswith("train_gpt_decode.py")


def test_raw_lzma2_payloads_and_python_312_fstrings_are_read():
    src = b'x = {"a": 1}\nprint(f"{x["a"]} and {x[\'a\']!r:>4}")\n'
    raw = lzma.compress(src, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    how, text = decode_payload(base64.b85encode(raw).decode())
    assert how == "lzma2-raw+base85" and text == src.decode()
    assert requote_fstrings('print(f"{x["a"]} {{y}}")') == "print(f\"{x['a']} {{y}}\")"
    assert decode_payload(base64.b85encode(zlib.compress(b"not python (")).decode()) is None


def test_cli_static_json_and_exit_codes(tmp_path, capsys):
    bad, _ = write(tmp_path, "bad", ILLEGAL["best_of_two_scores"][1])
    good, _ = write(tmp_path, "good", LEGAL["per_document_lora"])
    assert main([str(bad), "--static", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {c["check"]: c["verdict"] for c in report["checks"]}["best_of"] == "FAIL"
    assert all(c["evidence"] == "static" for c in report["checks"])
    assert main([str(good), "--static"]) == 0
    out = capsys.readouterr().out
    assert "PASS  static: val data reaches no update outside score-first" in out and "FAIL" not in out
    garbage = tmp_path / "garbage.py"
    garbage.write_text("def (:\n")
    assert main([str(garbage), "--static"]) == 2
    assert "garbage.py: not valid Python (line 1" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["readable", "self-extracting"])
def test_the_packed_default_recipe_passes_and_its_ttt_is_recognised(tmp_path, form):
    # tools/pack.py ships train_gpt.py self-extracting and writes its readable twin beside it
    path = ROOT / ("train_gpt.py" if form == "self-extracting" else "train_gpt.readable.py")
    report = audit_file(path)
    assert not not_passing(report), not_passing(report)
    # recognised by its structure (the shipped file's minifier renames doc_ttt): the default's phased per-document
    # TTT has two updates on val data, the per-document LoRA step and the global phase's SGD, each after its score
    assert len(report["score_first"]) == 2
    assert all("doc_ttt()" in f["message"] for f in report["score_first"]) or form == "self-extracting"
    assert len(report["units"]) == (2 if form == "self-extracting" else 1)


@pytest.mark.upstream
def test_every_merged_record_is_audited_without_crashing(capsys):
    upstream = os.environ.get("GOLF_UPSTREAM")
    if not upstream:
        pytest.skip("GOLF_UPSTREAM is not set (a checkout of openai/parameter-golf)")
    files = sorted(Path(upstream).glob("records/track_10min_16mb/*/train_gpt.py"))
    assert len(files) >= 40, f"{upstream}: expected the merged records, found {len(files)} train_gpt.py"
    fails = {}
    for f in files:
        rc = main([str(f), "--static", "--json"])
        out = capsys.readouterr()
        assert rc in (0, 1), f"{f}: exit {rc}: {out.err[-500:]}"
        report = json.loads(out.out)
        fails[f.parent.name] = [c["check"] for c in report["checks"] if c["verdict"] == "FAIL"]
    # The records a reviewer accepted: a FAIL here would be a false alarm (none was raised in their PR threads).
    assert not {k: v for k, v in fails.items() if v}, fails


@pytest.mark.parametrize("default, verdict", [("0", "WARN"), ("1", "FAIL")])
def test_an_illegal_branch_behind_a_flag_off_by_default_warns(tmp_path, default, verdict):
    body = ILLEGAL["adapt_before_score"][1].replace(
        "        model(chunk[:-1], chunk[1:]).mean().backward()  # <- here\n",
        "        if use_slot:\n            model(chunk[:-1], chunk[1:]).mean().backward()  # <- here\n").replace(
        "    total = 0.0\n",
        f"    total = 0.0\n    use_slot = bool(int(os.environ.get('SLOT_ENABLED', '{default}')))\n")
    path, line = write(tmp_path, "slot", body)
    result = verdicts(audit_file(path))["val_update"]
    assert result["verdict"] == verdict and result["findings"][0]["line"] == line, result
    assert ("SLOT_ENABLED='0'" in result["findings"][0]["message"]) == (default == "0")


# A minifier gives unrelated functions the same short names: a nested helper of one function and a top-level
# function elsewhere. A call reaches the def its scope sees, as in Python; matching every def by name made the model
# built by the top-level `B` carry the val data the nested `B` returns, and the timing warm-up a false FAIL.
SAME_NAMES = PRELUDE + '''
def B(cfg):
    return GPT(cfg)


def timing(model):
    x = torch.randint(0, 100, (4, 64))
    warm = copy.deepcopy(model)
    warm.token_losses(x, x).mean().backward()


def peek(val_tokens):
    def B():
        return val_tokens[:64]
    return B()


def run(cfg):
    model = B(cfg)
    timing(model)
'''


def test_a_call_reaches_the_def_its_scope_sees(tmp_path):
    path = tmp_path / "same_names.py"
    path.write_text(SAME_NAMES)
    assert not not_passing(audit_file(path)), not_passing(audit_file(path))
    # the same warm-up on a model the top-level B builds from val data still fails
    path.write_text(SAME_NAMES.replace("model = B(cfg)", "model = B(load_validation_tokens())"))
    assert verdicts(audit_file(path))["val_update"]["verdict"] == "FAIL"
