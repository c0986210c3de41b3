"""Every merged record of a local upstream checkout, read by golf's log reader and validator.

    GOLF_UPSTREAM=/work/upstream pytest -m upstream -q tests/test_upstream.py
    GOLF_UPSTREAM=/work/upstream python tests/test_upstream.py     # the per-log table behind the counts

Skipped (the only skip) when GOLF_UPSTREAM is unset. A record log is a *.log / *.txt file (not
requirements.txt) in or below a records/track_10min_16mb/<folder> that has a submission.json. Every folder of
records/track_non_record_16mb is validated on its own track (no FAIL for the track or a time).
"""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.logparse import parse_run_log  # noqa: E402
from tools.submit import FAIL, Check, check_folder, folder_logs, same_score, seed_of  # noqa: E402

UPSTREAM = os.environ.get("GOLF_UPSTREAM")
pytestmark = [pytest.mark.upstream,
              pytest.mark.skipif(not UPSTREAM, reason="set GOLF_UPSTREAM to a checkout of openai/parameter-golf")]
READ_GOAL = 0.95
FRONTIER = "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"


def record_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "records" / "track_10min_16mb").glob("*/submission.json"))


def survey(root: Path) -> list[dict]:
    """One row per record log: its claim, and the folder's per-seed val_bpb for its seed where given."""
    rows = []
    for folder in record_folders(root):
        sub = json.loads((folder / "submission.json").read_text())
        per_seed = sub.get("seed_results") if isinstance(sub.get("seed_results"), dict) else {}
        logs = [(p, parse_run_log(str(p))) for p in folder_logs(folder)]
        for path, s in logs:
            seed = seed_of(path, s)[0]
            reported = (per_seed.get(str(seed)) or {}).get("val_bpb")
            claim = s.claimed()
            same_seed = [o for q, o in logs if q != path and seed_of(q, o)[0] == seed]
            rows.append({"log": str(path.relative_to(folder.parent)), "seed": seed, "claim": claim,
                         "reported": reported, "steps": bool(s.steps or s.vals),
                         "matches": None if reported is None or claim is None else same_score(reported, claim["val_bpb"]),
                         "in_log": reported is not None and any(same_score(reported, x["val_bpb"]) for x in s.scores),
                         "in_seed_logs": reported is not None and any(same_score(reported, x["val_bpb"])
                                                                      for o in same_seed for x in o.scores)})
    return rows


@pytest.fixture(scope="module")
def rows():
    return survey(Path(UPSTREAM))


def test_claimed_score_of_at_least_95_percent_of_record_logs(rows):
    read = [r for r in rows if r["claim"]]
    assert len(rows) >= 100  # the checkout has the merged records (127 logs in 44 folders on 2026-04-29)
    assert len(read) / len(rows) >= READ_GOAL, [r["log"] for r in rows if not r["claim"]]
    # what is not read is not a run: no step line in it either (e.g. a multi-seed summary of JSON blocks)
    assert [r["log"] for r in rows if not r["claim"] and r["steps"]] == []


def test_claims_agree_with_submission_json_per_seed(rows):
    checked = [r for r in rows if r["matches"] is not None]
    assert len(checked) >= 60
    # every per-seed figure is a score of some log of that seed: the claim itself, a lower-ranked line of
    # the same log (a TTT that came out worse than its sliding score), or a rerun's log
    assert [r["log"] for r in checked if not (r["matches"] or r["in_log"] or r["in_seed_logs"])] == []
    assert sum(r["matches"] for r in checked) / len(checked) >= 0.9


def test_validator_calls_no_finished_run_unfinished():
    for folder in record_folders(Path(UPSTREAM)):
        unfinished = [c.where for c in check_folder(folder) if c.level == FAIL and "did not finish" in c.text]
        finished = [str(p.relative_to(folder)) for p in folder_logs(folder) if parse_run_log(str(p)).claimed()]
        assert not set(unfinished) & set(finished), folder.name


def test_frontier_record_three_seeds():
    folder = Path(UPSTREAM) / "records" / "track_10min_16mb" / FRONTIER
    checks = check_folder(folder)
    assert [c.line() for c in checks if c.level == FAIL] == []
    claims = {c.where: c.text for c in checks if c.text.startswith("claimed")}
    assert claims == {f"train_seed{s}.log": f"claimed quantized_ttt_phased val_bpb {v} = submission.json seed {s} "
                                            f"val_bpb {v}" for s, v in (("0", 1.06124613), ("1234", 1.06208695),
                                                                       ("42", 1.05989454))}


def test_non_record_folders_fail_on_no_track_or_time():
    root = Path(UPSTREAM) / "records" / "track_non_record_16mb"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) >= 14  # 14 folders on 2026-05-04 (4-hour, 27-hour, 1x5090, 2xH100 runs among them)
    for folder in folders:
        checks = check_folder(folder)
        fails = [c.text for c in checks if c.level == FAIL]
        assert [t for t in fails if "track" in t or "took" in t] == [], folder.name
        ended = {str(p.relative_to(folder)) for p in folder_logs(folder) if parse_run_log(str(p)).training_end()}
        assert [c.where for c in checks if c.where in ended and "did not finish" in c.text] == [], folder.name
    dg = root / "2026-03-23_DGAttention_DavidGao"  # stopped on its cap, scored only before quantising
    assert Check(FAIL, "train.log", "no artifact score: the claimed 1.1898 is the pre-quantisation val; training "
                                    "reached its end: wallclock stop at step 2979") in check_folder(dg)


if __name__ == "__main__":
    table = survey(Path(UPSTREAM or "/work/upstream"))
    for r in table:
        c = r["claim"]
        verdict = ("-" if r["matches"] is None else "match" if r["matches"] else
                   "in-log" if r["in_log"] else "other-log" if r["in_seed_logs"] else "MISSING")
        print(f"{'READ' if c else 'NOT READ'}\t{r['log']}\tseed={r['seed']}\t"
              f"{c and c['label']}\t{c and c['val_bpb']}\tsubmission={r['reported']}\t{verdict}")
    read = sum(bool(r["claim"]) for r in table)
    checked = [r for r in table if r["matches"] is not None]
    print(f"read {read}/{len(table)}; per-seed checked {len(checked)}, equal {sum(r['matches'] for r in checked)}")
