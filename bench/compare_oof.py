"""Paired comparison of two runs' out-of-fold predictions, model by model.

For a setting that changes the data (e.g. ``landmarks.hands_every``): run the pipeline in two
workspaces, then compare each model's pooled CV macro-F1 on the windows both runs scored, with
a paired subject-bootstrap interval. A difference whose interval contains 0 is a tie.

    python bench/compare_oof.py /path/to/run_a/models /path/to/run_b/models [model ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)


def main() -> None:
    from pipeline.contracts.predictions import FILE, read_oof
    from pipeline.evaluation.intervals import paired_difference, subject_bootstrap

    a_dir, b_dir, *names = sys.argv[1:]
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    names = names or sorted(p.parent.name for p in a_dir.glob(f"*/{FILE}") if (b_dir / p.parent.name / FILE).exists())
    print(f"A = {a_dir}\nB = {b_dir}\n")
    print("| model | windows | A macro-F1 [95% CI] | B macro-F1 [95% CI] | A - B [95% CI] | verdict |")
    print("|---|---|---|---|---|---|")
    for name in names:
        ya, pa, ia, classes = read_oof(a_dir / name / FILE)
        yb, pb, ib, classes_b = read_oof(b_dir / name / FILE)
        assert classes == classes_b, f"{name}: the runs have different classes"
        both = ia[["window_id"]].reset_index().merge(ib[["window_id"]].reset_index(), on="window_id")
        ka, kb = both["index_x"].to_numpy(), both["index_y"].to_numpy()
        y, subj = ya[ka], ia["subject"].to_numpy()[ka]
        assert (y == yb[kb]).all(), f"{name}: the runs label the same windows differently"
        pred_a, pred_b = pa[ka].argmax(1), pb[kb].argmax(1)
        fa = subject_bootstrap(y, pred_a, subj, classes)["macro_f1"]
        fb = subject_bootstrap(y, pred_b, subj, classes)["macro_f1"]
        d = paired_difference(y, pred_a, pred_b, subj, len(classes))
        verdict = "tie" if d.lo <= 0 <= d.hi else ("A better" if d.lo > 0 else "B better")
        print(
            f"| {name} | {len(both)} | {fa.point:.3f} [{fa.lo:.3f}, {fa.hi:.3f}] | {fb.point:.3f} [{fb.lo:.3f}, "
            f"{fb.hi:.3f}] | {d.point:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] | {verdict} |"
        )


if __name__ == "__main__":
    main()
