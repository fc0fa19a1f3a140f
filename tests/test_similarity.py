"""Task similarity (METHOD.md §4): quantile W1, sliced W1, λ(W), masked mean pooling."""
from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sers.errors import SersError  # noqa: E402
from sers.similarity import (  # noqa: E402
    pooled_hidden_states,
    quantile_w1,
    random_directions,
    similarity_lambda,
    sliced_w1,
    task_similarity,
)

from _tiny import sample_rows, task_prompts, tiny_model_dir  # noqa: E402,F401


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from sers.models import load_model, load_tokenizer

    return load_model(str(tiny_model_dir), device="cpu"), load_tokenizer(str(tiny_model_dir))


# ---- quantile W1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [0.75, -2.5, 3.0])
def test_quantile_w1_of_a_shift_is_the_shift(c):
    a = np.random.default_rng(0).standard_normal(101)
    assert quantile_w1(a, a + c) == pytest.approx(abs(c), abs=1e-12)
    assert quantile_w1(a + c, a) == pytest.approx(abs(c), abs=1e-12)


def test_quantile_w1_hand_computed():
    # 0..100: the q-quantile is 100q, so the 20 levels are 5, 9.7368.., ..., 95; vs all-zero: mean = 50
    a = np.arange(101.0)
    assert quantile_w1(a, np.zeros(7)) == pytest.approx(50.0, abs=1e-12)
    assert quantile_w1(a, a) == 0.0
    # only 2 levels (0.05 and 0.95): |5 − 0| and |95 − 0| → 50 as well; 3 levels: 5, 50, 95
    assert quantile_w1(a, np.zeros(3), n_quantiles=3) == pytest.approx(50.0)
    assert quantile_w1(a, np.full(4, 50.0), n_quantiles=3) == pytest.approx((45 + 0 + 45) / 3)


def test_quantile_w1_refuses_empty():
    with pytest.raises(SersError):
        quantile_w1([], [1.0])


# ---- sliced W1 ---------------------------------------------------------------------------------

def test_random_directions_are_orthonormal_and_seeded():
    q = random_directions(16, 32, seed=3)  # H < n_projections: min(H, n) directions
    assert q.shape == (16, 16)
    np.testing.assert_allclose(q.T @ q, np.eye(16), atol=1e-12)
    q = random_directions(64, 32, seed=3)
    assert q.shape == (64, 32)
    np.testing.assert_allclose(q.T @ q, np.eye(32), atol=1e-12)
    np.testing.assert_array_equal(q, random_directions(64, 32, seed=3))
    assert not np.allclose(q, random_directions(64, 32, seed=4))


def test_sliced_w1_identical_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)) + 0.5
    v = rng.standard_normal(16)
    assert sliced_w1(x, x) == pytest.approx(0.0, abs=1e-12)
    assert sliced_w1(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-12)  # a distance between sets
    dists = [sliced_w1(x, x + s * v) for s in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)]
    assert dists[0] == pytest.approx(0.0, abs=1e-12)
    assert all(b > a for a, b in zip(dists, dists[1:])), dists


def test_sliced_w1_normalises_rows():
    x = np.random.default_rng(1).standard_normal((50, 8)) + 1.0  # not symmetric about 0
    assert sliced_w1(x, 7.0 * x) == pytest.approx(0.0, abs=1e-12)  # scale is removed
    assert sliced_w1(x, -x) > 0.1  # direction is not


def test_sliced_w1_projects_before_it_normalises(monkeypatch):
    # With the first two axes as the directions, [3, 4, 100, 0] projects to [3, 4], which normalises to
    # [0.6, 0.8]: the same point as [0.6, 0.8, 0, 0], so W = 0. Normalising the 4-d vector first would
    # shrink it to [0.03, 0.04] and give W ≈ 0.66.
    import sers.similarity as similarity

    monkeypatch.setattr(similarity, "random_directions", lambda dim, k, seed: np.eye(dim)[:, :2])
    x = np.tile([3.0, 4.0, 100.0, 0.0], (20, 1))
    y = np.tile([0.6, 0.8, 0.0, 0.0], (20, 1))
    assert similarity.sliced_w1(x, y, n_projections=2) == pytest.approx(0.0, abs=1e-12)


def test_projected_vectors_have_unit_norm_so_w_does_not_shrink_with_width():
    # Two clouds that differ by a shift: W of the reference's order hardly depends on the hidden size,
    # while normalising before projecting shrank it by about √(H/32).
    rng = np.random.default_rng(7)
    ws = []
    for hidden in (64, 1024):
        mean = rng.standard_normal(hidden)
        x, y = rng.standard_normal((300, hidden)) + mean, rng.standard_normal((300, hidden)) - mean
        ws.append(sliced_w1(x, y, n_projections=32, seed=1))
    assert 0.5 < ws[1] / ws[0] < 2.0, ws


def test_sliced_w1_is_mean_of_per_direction_quantile_w1():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((40, 8)), rng.standard_normal((60, 8)) + 0.3
    q = random_directions(8, 4, seed=5)
    px, py = x @ q, y @ q
    px /= np.linalg.norm(px, axis=1, keepdims=True)
    py /= np.linalg.norm(py, axis=1, keepdims=True)
    expected = np.mean([quantile_w1(px[:, j], py[:, j], 20) for j in range(4)])
    assert sliced_w1(x, y, n_projections=4, seed=5) == pytest.approx(expected, abs=1e-12)


# ---- λ(W) --------------------------------------------------------------------------------------

def test_similarity_lambda_hand_numbers():
    assert similarity_lambda(0.0) == pytest.approx(0.15, abs=1e-12)
    # W = τ: 0.15 + 0.45 · (1 − e^−1) = 0.15 + 0.45 · 0.6321205588 = 0.4344542515
    assert similarity_lambda(0.08) == pytest.approx(0.434454251472851, abs=1e-12)
    assert similarity_lambda(0.08, tau=0.08) == pytest.approx(0.4344542515, abs=1e-9)
    assert similarity_lambda(1e9) == pytest.approx(0.6, abs=1e-12)
    assert similarity_lambda(-1.0) == 0.15  # clipped
    # τ is applied: the same W with a larger τ gives a weaker constraint
    assert similarity_lambda(0.08, tau=0.8) < similarity_lambda(0.08, tau=0.08)
    assert similarity_lambda(0.1, 0.1, 0.5, tau=0.1) == pytest.approx(0.1 + 0.4 * (1 - math.exp(-1)))


def test_similarity_lambda_refuses_bad_tau():
    with pytest.raises(SersError):
        similarity_lambda(0.1, tau=0.0)


# ---- pooling on the tiny model -------------------------------------------------------------------

def test_pooling_is_padding_invariant(tiny):
    model, tok = tiny
    prompts = task_prompts(tok, "sa", 4, lengths=[12, 40, 75, 100]) + task_prompts(tok, "qa", 2)
    alone = np.stack([pooled_hidden_states(model, tok, [p])[0] for p in prompts])
    batched = pooled_hidden_states(model, tok, prompts, batch_size=8)
    assert batched.shape == (len(prompts), model.config.hidden_size)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # another batching (different companions, different padding) gives the same vectors
    np.testing.assert_allclose(pooled_hidden_states(model, tok, prompts[::-1], batch_size=3)[::-1], alone,
                               atol=1e-5)


def test_pooling_is_masked_mean_of_second_to_last_layer(tiny):
    import torch

    model, tok = tiny
    p = task_prompts(tok, "qa", 1)[0]
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states
    assert len(hs) == model.config.num_hidden_layers + 1
    np.testing.assert_allclose(pooled_hidden_states(model, tok, [p])[0], hs[-2][0].mean(0).numpy(), atol=1e-5)


def test_task_similarity(tiny):
    model, tok = tiny
    sa, qa = task_prompts(tok, "sa", 12), task_prompts(tok, "qa", 12)
    same = task_similarity(model, tok, sa[:6], sa[6:], max_rows=500, seed=0)
    other = task_similarity(model, tok, sa, qa, max_rows=5, seed=0)
    assert other["n_new"] == 5 and other["n_replay"] == 5 and same["n_new"] == 6
    assert set(other) >= {"W", "lambda", "n_new", "n_replay", "tau", "lambda_min", "lambda_max"}
    assert other["lambda"] == pytest.approx(similarity_lambda(other["W"], 0.15, 0.6, 0.08))
    assert 0.15 <= same["lambda"] <= 0.6 and same["W"] >= 0
    assert other == task_similarity(model, tok, sa, qa, max_rows=5, seed=0)  # seeded draw
    with pytest.raises(SersError):
        task_similarity(model, tok, sa, [])


def test_pooling_over_the_prompt_or_the_whole_training_sequence(tiny):
    from sers.prompts import encode_example
    from sers.similarity import pooled_ids

    _, tok = tiny
    row = sample_rows("sa")[0]
    prompt, target = encode_example(tok, row.full_prompt, row.output, "plain", 256, 16)
    assert pooled_ids(tok, row.full_prompt, row.output, "plain", "prompt", 256, 16) == prompt
    assert pooled_ids(tok, row.full_prompt, row.output, "plain", "sequence", 256, 16) == prompt + target
    assert target[-1] == tok.eos_token_id
    with pytest.raises(SersError, match="similarity.pooling"):
        pooled_ids(tok, row.full_prompt, row.output, "plain", "tokens")
