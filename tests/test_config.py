import pytest
import yaml

from sers.config import load_config, task_filter_settings, validate_config
from sers.errors import SersError

from conftest import REPO


@pytest.mark.parametrize("config,message", [
    ({"synthesis": {"top_p": 1.5}}, "config: synthesis.top_p: 1.5 is greater than the maximum of 1"),
    ({"selection": {"memory": -1}}, "config: selection.memory: -1 is less than the minimum of 1"),
    ({"evolution": {"se_alpha": 1.5}}, "config: evolution.se_alpha: 1.5 is greater than the maximum of 1"),
    ({"evolution": {"se_ratio": -0.1}}, "config: evolution.se_ratio: -0.1 is less than the minimum of 0"),
    ({"training": {"lr": "fast"}}, "config: training.lr: 'fast' is not of type 'number'"),
    ({"orders": {"o1": ["sa", "pe", "sa"]}}, "config: orders.o1: task 'sa' appears more than once"),
    ({"tasks": ["../x"]}, "task name '../x'"),
    ({"orders": {"o1": ["a/b"]}}, "task name 'a/b'"),
    ({"methods": ["sers", "magic"]}, "config: methods.1: 'magic' is not one of"),
    ({"synthesis": {"mask_low": 0.7, "mask_high": 0.5}}, "synthesis.mask_low (0.7) is above synthesis.mask_high"),
    ({"model": {"source": "path"}}, "model.path: required"),
    ({"trainig": {}}, "'trainig' was unexpected"),
    ({"replicates": 2, "orders": {"o-rep2": ["sa"]}}, "names ending in -rep<N> are reserved for replicates"),
])
def test_invalid_values_name_the_key(config, message):
    with pytest.raises(SersError) as e:
        validate_config(config)
    assert message in str(e.value)


def test_defaults_are_filled():
    cfg = validate_config({})
    assert cfg["selection"] == {"memory": 200, "n_clusters": 20, "embed_text": "input", "quota": "exact",
                                "overrides": {}}
    assert cfg["similarity"]["tau"] == 0.08 and cfg["evolution"]["se_alpha"] == 0.5


def test_per_task_threshold_reaches_only_that_task():
    cfg = validate_config({"filter": {"tasks": {"sa": {"max_tokens": 150}}}})
    assert task_filter_settings(cfg, "sa")["max_tokens"] == 150
    assert task_filter_settings(cfg, "pe")["max_tokens"] == 800


def test_shipped_configs_validate():
    for path in [REPO / "config/config.yaml", REPO / "config/tiny.yaml",
                 *sorted((REPO / "config/experiments").glob("*.yaml")), *sorted((REPO / "benchmarks").glob("*.yaml"))]:
        load_config(path)


def _leaf_keys(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaf_keys(v, prefix + (k,))
        else:
            yield prefix + (k,)


def test_presets_set_every_key_the_default_sets():
    """Presets are layered over config/config.yaml: a key they forget would leak the laptop default."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for path in sorted((REPO / "config/experiments").glob("*.yaml")):
        preset = yaml.safe_load(path.read_text())
        for key in _leaf_keys(default):
            node = preset
            for part in key:
                assert isinstance(node, dict) and part in node, f"{path.name} does not set {'.'.join(key)}"
                node = node[part]


def _merged(base: dict, over: dict) -> dict:
    """Snakemake's layering of --configfile over config/config.yaml (mappings merge key by key)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_paper_preset_switches_are_the_reference_code():
    """The paper preset runs what JerryWangJun/LLM_CL_SERS ran: its prompts, format, pooling and selection."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    preset = yaml.safe_load((REPO / "config/experiments/paper-llama2-7b.yaml").read_text())
    cfg = validate_config(_merged(default, preset))
    assert cfg["model"]["prompt_format"] == "llama2"
    s = cfg["synthesis"]
    assert (s["mode"], s["infill_prompt"], s["keep_whitespace"], s["max_seeds"]) == ("prompt", "reference", False, 0)
    assert s["keep_punctuation"] is False
    assert (s["top_p"], s["temperature"], s["repetition_penalty"]) == (0.6, 0.9, 1.2)
    assert cfg["selection"]["embed_text"] == "full_prompt"
    assert cfg["similarity"]["pooling"] == "sequence" and cfg["similarity"]["only_above_min"] is True
    assert (cfg["evolution"]["hardness"], cfg["evolution"]["blend"]) == ("released", "logit")
    # part 2: no BOS in synthesis, the filters' duplicates, k-means quotas, 512 new tokens, the scorer, O-LoRA
    assert s["add_bos"] is False and s["ssr_samples"] == 3
    assert cfg["filter"]["defaults"]["deduplicate"] is False
    assert cfg["filter"]["icl"] == {"max_instruction_input_tokens": 500, "max_tokens": 800, "max_output_tokens": 128,
                                    "max_embed_tokens": 510, "save_more": False, "deduplicate": False}  # SERS's parser.py
    assert (cfg["selection"]["memory"], cfg["selection"]["n_clusters"], cfg["selection"]["quota"]) == (200, 20, "reference")
    assert (cfg["eval"]["max_new_tokens"], cfg["eval"]["rouge"]) == (512, "reference")
    assert cfg["baselines"]["olora"]["form"] == "reference"


def test_paper_preset_trains_each_order_and_method_on_its_published_schedule():
    """src/scripts-ni-c012/lora/cl{,2,3}/llama2-7b/*.sbatch: epochs / batch of SERS 5/32, 3/32, 5/16 and SSR
    3/16, 3/32, 3/16; lora/sing (every order's first stage) 3/32; lr 2e-4 throughout."""
    from sers.config import training_settings

    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    preset = yaml.safe_load((REPO / "config/experiments/paper-llama2-7b.yaml").read_text())
    cfg = validate_config(_merged(default, preset))

    def schedule(order, method, stage=2):
        t = training_settings(cfg, order, method, stage)
        return t["epochs"], t["batch_size"] * t["grad_accum"], t["lr"]

    published = {"sers": [(5, 32), (3, 32), (5, 16)], "ssr": [(3, 16), (3, 32), (3, 16)]}
    for method, per_order in published.items():
        for order, (epochs, batch) in zip(("order1", "order2", "order3"), per_order):
            assert schedule(order, method) == (epochs, batch, 2e-4), (order, method)
            assert schedule(f"{order}-rep2", method, 10) == (epochs, batch, 2e-4)
    for order in ("order1", "order2", "order3"):
        assert schedule(order, None, 1) == (3, 32, 2e-4)  # lora/sing
        assert schedule(order, "sers-nose") == schedule(order, "sers")  # ablations share SERS's schedule
        assert schedule(order, "seq") == (3, 32, 2e-4)  # no released script: the single-task schedule


def test_reference_infill_prompt_text():
    from sers.synthesis import INFILL_TEMPLATES

    text = INFILL_TEMPLATES["reference"].format(example_masked="A ____ c", example_original="A b c",
                                                seed_masked="x ____")
    assert text == ("Replace `____` in the context while keeping them logically consistent. Only replace `____` "
                    "in the sentence. Do NOT modify other parts.\n\nHere is an example:\n\nInput: \nA ____ c\n\n"
                    "Output: \nA b c\n            \nNow, process the following input:\n\nInput: \nx ____\n\n"
                    "Output: \n")
    assert "{instruction}" not in INFILL_TEMPLATES["reference"]


def test_icl_prompt_is_ssr_vanilla_template():
    """complete_param_nic010_cate.py, template vanilla: definition, two shots, then "Input:" to continue."""
    from sers.synthesis import ICL_TEMPLATE

    text = ICL_TEMPLATE.format(instruction="Def.", a_input="x1", a_output="y1", b_input="x2", b_output="y2")
    assert text == "Def.\n\nInput: x1\nOutput: y1\n\nInput: x2\nOutput: y2\n\nInput:"


def test_old_chat_template_key_says_what_replaced_it():
    with pytest.raises(SersError, match="model.chat_template was replaced by model.prompt_format"):
        validate_config({"model": {"chat_template": True}})


def test_training_overrides_pick_a_schedule_per_order_method_and_stage():
    from sers.config import training_settings

    cfg = validate_config({"orders": {"o1": ["sa", "pe", "qa"], "o2": ["pe", "sa"]}, "replicates": 2, "training": {
        "epochs": 3, "batch_size": 8,
        "overrides": [{"stages": [1], "set": {"epochs": 1}},
                      {"methods": ["sers", "ssr"], "set": {"epochs": 5}},
                      {"methods": ["sers"], "orders": ["o2"], "set": {"epochs": 4, "batch_size": 2}}]}})
    epochs = lambda *key: training_settings(cfg, *key)["epochs"]  # noqa: E731
    assert epochs("o1", None, 1) == 1  # the shared first stage: only rules without methods reach it
    assert epochs("o1", "seq", 2) == 3 and epochs("o1", "sers", 2) == 5 and epochs("o1", "ssr", 3) == 5
    assert training_settings(cfg, "o2", "sers", 2) | {} == {**training_settings(cfg, "o1", "sers", 2), "epochs": 4,
                                                           "batch_size": 2}  # a later rule wins
    assert epochs("o2-rep2", "sers", 2) == 4  # a replicate follows its order's schedule
    assert epochs(None, "mtl", None) == 3
    assert "overrides" not in training_settings(cfg, "o1", "seq", 2)


def test_training_overrides_are_checked():
    with pytest.raises(SersError, match=r"training.overrides\[0\].orders: 'order9'"):
        validate_config({"training": {"overrides": [{"orders": ["order9"], "set": {"epochs": 1}}]}})
    with pytest.raises(SersError, match="training.overrides.0.set"):
        validate_config({"training": {"overrides": [{"set": {"lora_r": 4}}]}})  # every stage shares the LoRA shape
