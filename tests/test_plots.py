import numpy as np
import pandas as pd
import pytest

from sers.errors import SersError
from sers.plots import (
    plot_forgetting_curves,
    plot_funnel,
    plot_matrix_heatmap,
    plot_pseudo_vs_seeds,
    plot_similarity,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check(path):
    data = path.read_bytes()
    assert data
    if path.suffix == ".png":
        assert data.startswith(PNG_MAGIC)
    else:
        text = data.decode("utf-8")
        assert "<svg" in text and text.rstrip().endswith("</svg>")
    # no temporary siblings left behind
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def matrix(offset=0.0):
    df = pd.DataFrame([[80, np.nan, 20], [60, 70, np.nan], [50, 65, 90]], columns=["A", "B", "C"],
                      index=["stage1-A", "stage2-B", "stage3-C"], dtype=float)
    return df + offset


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_heatmap_with_nan(tmp_path, suffix):
    out = tmp_path / f"m{suffix}"
    plot_matrix_heatmap(matrix(), out, "sers / order1")
    check(out)


def test_heatmap_all_nan(tmp_path):
    out = tmp_path / "m.png"
    plot_matrix_heatmap(matrix() * np.nan, out, "empty")
    check(out)


def test_forgetting_curves(tmp_path):
    out = tmp_path / "f.svg"
    plot_forgetting_curves({"sers": matrix(), "replay": matrix(-10)}, out)
    check(out)


def test_similarity(tmp_path):
    recs = [{"order": o, "method": m, "stage": s, "task": t, "W": w, "lambda": lam}
            for o in ("order1", "order2") for m in ("sers",)
            for s, t, w, lam in ((1, "A", None, None), (2, "B", 0.4, 0.1), (3, "C", 0.7, 0.3))]
    out = tmp_path / "s.png"
    plot_similarity(recs, out)
    check(out)
    with pytest.raises(SersError, match="lacks 'W'"):
        plot_similarity([{"order": "o", "method": "m", "stage": 1, "lambda": 0}], tmp_path / "x.png")
    plot_similarity([], tmp_path / "none.png")  # a run whose methods have no similarity (seq, ewc, …)
    check(tmp_path / "none.png")


def test_funnel(tmp_path):
    funnel = {
        "A": {"raw": 100, "filtered": 70, "selected": 20, "evolved": 20,
              "dropped_by_reason": {"too_short": 10, "duplicate": 20}},
        "B": {"raw": 50, "filtered": 50, "selected": 20, "evolved": None, "dropped_by_reason": {}},
        "C": {"raw": 30, "filtered": 10, "selected": 10, "dropped_by_reason": {"copies_seed": 20}},
    }
    out = tmp_path / "funnel.svg"
    plot_funnel(funnel, out)
    check(out)


def test_pseudo_vs_seeds(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "pca.png"
    plot_pseudo_vs_seeds(rng.normal(size=(40, 8)), rng.normal(size=(5, 8)), out, "task A")
    check(out)
    with pytest.raises(SersError, match="equal widths"):
        plot_pseudo_vs_seeds(np.zeros((3, 4)), np.zeros((2, 5)), tmp_path / "bad.png", "x")


def test_bad_suffix(tmp_path):
    with pytest.raises(SersError, match="must end in"):
        plot_matrix_heatmap(matrix(), tmp_path / "m.jpg", "x")
    assert list(tmp_path.iterdir()) == []


def test_differences_forest_plot(tmp_path):
    from sers.plots import plot_differences

    comparisons = [
        {"order": "order1", "method": "sers", "baseline": "seq",
         "ar": {"diff": 2.0, "ci": [0.5, 3.5], "p": 0.01, "within_noise": False},
         "bwt": {"diff": -1.0, "ci": [-3.0, 1.0], "p": 0.4, "within_noise": True}},
        {"order": "order1", "method": "mtl", "baseline": "seq",
         "ar": {"diff": 5.0, "ci": [4.0, 6.0], "p": 0.001, "within_noise": False}, "bwt": None},
    ]
    out = tmp_path / "d.png"
    plot_differences(comparisons, out)
    check(out)
    plot_differences([], tmp_path / "empty.png")
    check(tmp_path / "empty.png")


def test_lambda_axis_spans_its_range(tmp_path):
    import matplotlib.pyplot as plt

    import sers.plots as plots

    recs = [{"order": "o", "method": "sers", "stage": 2, "task": "b", "W": 0.01, "lambda": 0.2,
             "lambda_min": 0.15, "lambda_max": 0.6}]
    seen = {}
    real_save = plots._save

    def capture(fig, path):
        seen["ylim"] = fig.axes[1].get_ylim()
        real_save(fig, path)

    plots._save = capture
    try:
        plots.plot_similarity(recs, tmp_path / "s.png")
    finally:
        plots._save = real_save
        plt.close("all")
    lo, hi = seen["ylim"]
    assert lo < 0.15 < 0.6 < hi and hi - lo < 0.6
