"""The packed shared-prefix layout: same loss and gradients as the plain and two-pass layouts, and
the cost rule that picks a layout per batch (`sers.forward`)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sers import forward  # noqa: E402
from sers.forward import PACKED_FLOP_MARGIN, LayerCost, choose_layout, layout_costs, packs, target_logits  # noqa: E402
from sers.regularisers import lora_parameters  # noqa: E402
from sers.training import target_cross_entropy  # noqa: E402

from _tiny import randomise_lora, sample_rows, tiny_model_dir  # noqa: E402,F401


def lora_model(model_dir, attention="sdpa"):
    from peft import LoraConfig, get_peft_model

    from sers.models import load_model

    torch.manual_seed(0)
    base = load_model(str(model_dir), device="cpu")
    base.set_attn_implementation(attention)
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj"]))
    return randomise_lora(model, std=0.1)  # lora_B ≠ 0, so lora_A gets gradient too


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    from sers.models import load_tokenizer
    from sers.prompts import encode_example

    tok = load_tokenizer(str(tiny_model_dir))
    rows = [encode_example(tok, r.full_prompt, r.output, "plain", 96, 16) for r in sample_rows("sa")[:5]]
    rows[1] = (rows[1][0], rows[1][1][:1] + rows[0][1])  # unequal target lengths
    rows[2] = (rows[2][0] + rows[3][1][:5], rows[2][1][:2])  # a longer prompt, a short target
    return tok.pad_token_id, rows


def loss_and_grads(model, pad_id, rows, layout, **kw):
    model.zero_grad(set_to_none=True)
    ce, n = target_cross_entropy(model, rows, pad_id, True, layout=layout, **kw)
    ce.backward()
    return float(ce.detach()), n, {k: p.grad.clone() for k, p in lora_parameters(model)}


def assert_same(a, b):
    (ce_a, n_a, g_a), (ce_b, n_b, g_b) = a, b
    assert n_a == n_b and ce_a == pytest.approx(ce_b, abs=1e-5)
    for k in g_a:
        assert g_a[k].abs().sum() > 0, k  # every LoRA matrix, the prefix's included, gets gradient
        torch.testing.assert_close(g_a[k], g_b[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # a bool mask for SDPA, an additive one for eager
def test_packed_layout_gives_the_loss_and_gradients_of_the_plain_one(tiny_model_dir, examples, attention):
    pad_id, rows = examples
    model = lora_model(tiny_model_dir, attention)
    model.train()
    plain = loss_and_grads(model, pad_id, rows, "plain")
    assert_same(loss_and_grads(model, pad_id, rows, "packed"), plain)
    assert_same(loss_and_grads(model, pad_id, rows, "two_pass"), plain)
    # the per-row reference: Σ over rows of token CE on the target / number of target tokens
    with torch.no_grad():
        total = sum(float(torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([p + t])).logits[0][len(p) - 1:-1],
                                                            torch.tensor(t), reduction="sum")) for p, t in rows)
    assert plain[0] == pytest.approx(total / plain[1], abs=1e-5)


def test_rows_split_over_several_packs_give_the_same_loss(tiny_model_dir, examples, monkeypatch):
    pad_id, rows = examples
    model = lora_model(tiny_model_dir)
    model.train()
    plain = loss_and_grads(model, pad_id, rows, "plain")
    forwards = []
    model.get_base_model().model.register_forward_hook(lambda *_: forwards.append(1))
    seqs = [p + t for p, t in rows]
    monkeypatch.setattr(forward, "MAX_PACK_TOKENS", max(map(len, seqs)) + 40)  # about two rows a pack
    assert_same(loss_and_grads(model, pad_id, rows, "packed"), plain)
    assert 3 <= len(forwards) <= len(rows)  # one forward per pack, each repeating the prefix


def test_packed_layout_with_gradient_checkpointing_and_a_teacher_adapter(tiny_model_dir, examples):
    """Checkpointed layers recompute a pack under the same mask; LwF's frozen teacher adapter (peft's
    per-row adapter names) reads the same logits in every layout."""
    from sers.training import enable_gradient_checkpointing

    pad_id, rows = examples
    model = lora_model(tiny_model_dir)
    model.train()
    plain = loss_and_grads(model, pad_id, rows, "plain")
    enable_gradient_checkpointing(model)
    assert_same(loss_and_grads(model, pad_id, rows, "packed"), plain)

    model.add_adapter("teacher", model.peft_config["default"])
    randomise_lora(model, std=0.1, seed=5)  # both adapters random, and different from each other
    model.eval()
    with torch.no_grad():
        ref_logits, ref_labels = target_logits(model, rows, pad_id, True, adapter="teacher", layout="plain")
        for layout in ("two_pass", "packed"):
            logits, labels = target_logits(model, rows, pad_id, True, adapter="teacher", layout=layout)
            assert torch.equal(labels, ref_labels)
            torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-4)
        own, _ = target_logits(model, rows, pad_id, True, layout="packed")
    assert not torch.allclose(own, ref_logits)  # the teacher really is another adapter


# ---- the cost rule ------------------------------------------------------------------------------------

SMOLLM2 = LayerCost(per_token=2.0 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536), per_pair=4.0 * 576)


def smollm2_shaped(attention="sdpa"):
    """A stand-in model with SmolLM2-135M's config: `LayerCost` and `choose_layout` read only that."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3)
    config._attn_implementation = attention
    return type("Model", (), {"config": config})()


def test_layer_cost_counts_a_llama_layer():
    assert LayerCost.of(smollm2_shaped()) == SMOLLM2


def test_packs_start_a_new_pack_when_joining_costs_more_than_repeating_the_prefix():
    # SmolLM2, a 375-token instruction and 16 short answers (the `pos` task): one pack of 1024 tokens
    assert packs(375, [40] * 16, SMOLLM2) == [list(range(16))]
    # long suffixes after a short prefix: joining costs attention over the whole pack; a new pack does not
    split = packs(60, [300] * 8, SMOLLM2)
    assert len(split) > 1 and [i for p in split for i in p] == list(range(8))
    assert packs(0, [10, 10], SMOLLM2) == [[0], [1]]  # nothing to share: every row alone


def test_choose_layout_takes_the_cheaper_shared_layout():
    model = smollm2_shaped()
    assert choose_layout(model, 0, [30, 40]) == "plain"
    pos_like = list(range(20, 84, 4))  # 16 answers of 20 to 80 tokens after a 375-token instruction
    for p, suffixes in ((375, pos_like), (375, [40] * 16), (60, [300] * 16), (8, [80, 90, 100])):
        costs = layout_costs(p, suffixes, SMOLLM2)
        assert costs["two_pass"] < costs["plain"]  # sharing a prefix always saves work
        best = "packed" if costs["packed"] <= PACKED_FLOP_MARGIN * costs["two_pass"] else "two_pass"
        assert choose_layout(model, p, suffixes) == best
    # answers of varied length after a long instruction (`pos`): packed, which pads nothing; 16 equal long
    # suffixes after a short prefix: two-pass, padded by nothing, attends to fewer pairs (measured 9% faster)
    assert choose_layout(model, 375, pos_like) == "packed"
    costs = layout_costs(60, [300] * 16, SMOLLM2)
    assert costs["two_pass"] < costs["packed"] and choose_layout(model, 60, [300] * 16) == "two_pass"
    # one-token suffixes: counted 4% dearer packed, within the margin (measured 35% faster)
    assert choose_layout(model, 16, [2] * 64) == "packed"
    assert choose_layout(smollm2_shaped("flash_attention_2"), 375, pos_like) == "two_pass"  # takes no 4D mask


def test_layout_costs_by_hand():
    cost = LayerCost(per_token=10.0, per_pair=1.0)
    c = layout_costs(4, [2, 3], cost)
    assert c["plain"] == 10 * 2 * 7 + 2 * 49
    assert c["two_pass"] == 10 * (4 + 2 * 3) + (16 + 2 * 3 * 7)
    assert c["packed"] == 10 * 9 + 81  # one pack: [prefix 4][2][3]


def test_pack_mask_by_hand_and_on_the_segments_device():
    from sers.forward import _pack_mask

    segments = torch.tensor([0, 0, 1, 1, 2])  # a 2-token prefix, a 2-token suffix, a 1-token suffix
    expected = torch.tensor([[1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 0, 0, 1]], dtype=torch.bool)  # the last row does not see suffix 1
    assert torch.equal(_pack_mask(segments, "bool", torch.float32)[0, 0], expected)
    additive = _pack_mask(segments, "additive", torch.bfloat16)[0, 0]
    assert additive.dtype == torch.bfloat16 and torch.equal(additive == 0, expected)
    # built where the segments are (a GPU in training), not on the host
    assert _pack_mask(segments.to("meta"), "additive", torch.bfloat16).device.type == "meta"
