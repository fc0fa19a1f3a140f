import pytest
import yaml

from conftest import REPO
from sers.config import load_config, task_filter_settings, validate_config
from sers.errors import SersError


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
])
def test_invalid_values_name_the_key(config, message):
    with pytest.raises(SersError) as e:
        validate_config(config)
    assert message in str(e.value)


def test_defaults_are_filled():
    cfg = validate_config({})
    assert cfg["selection"] == {"memory": 200, "n_clusters": 20}
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
