"""Configuration: JSON-Schema validation with defaults, plus the cross-key checks a schema cannot say.

Errors name the key path (`config: synthesis.top_p: 1.5 is greater than the maximum of 1`).
"""
from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .data import check_task_name
from .errors import SersError

SCHEMA_FILE = "config.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(resources.files("sers.schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def _with_defaults(validator_class):
    """A validator that fills `default` values in while it validates (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate `config` in place (filling defaults) and return it; raise SersError on the first fault."""
    if not isinstance(config, dict):
        raise SersError(f"{source}: the configuration must be a mapping of keys to values")
    if isinstance(config.get("model"), dict) and "chat_template" in config["model"]:
        raise SersError(f"{source}: model.chat_template was replaced by model.prompt_format "
                        "(chat_template, plain or llama2)")
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise SersError(f"{source}: {_key_path(best)}: {best.message}")
    _check_semantics(config, source)
    return config


def _check_semantics(config: dict, source: str) -> None:
    for name, order in config["orders"].items():
        check_task_name(name, "orders")
        for task in order:
            check_task_name(task, f"orders.{name}")
        repeated = sorted({t for t in order if order.count(t) > 1})
        if repeated:
            raise SersError(f"{source}: orders.{name}: task {repeated[0]!r} appears more than once")
    if config["replicates"] > 1:
        for name in config["orders"]:
            if re.search(r"-rep\d+$", name):
                raise SersError(f"{source}: orders.{name}: names ending in -rep<N> are reserved for replicates")
    for task in config["tasks"]:
        check_task_name(task, "tasks")
    for task in list(config["filter"]["tasks"]) + list(config["data"]["overrides"]):
        check_task_name(task, "filter.tasks / data.overrides")
    s = config["synthesis"]
    if s["mask_low"] > s["mask_high"]:
        raise SersError(f"{source}: synthesis.mask_low ({s['mask_low']}) is above synthesis.mask_high ({s['mask_high']})")
    sim = config["similarity"]
    if sim["lambda_min"] > sim["lambda_max"]:
        raise SersError(f"{source}: similarity.lambda_min ({sim['lambda_min']}) is above similarity.lambda_max ({sim['lambda_max']})")
    for i, rule in enumerate(config["training"]["overrides"]):
        unknown = [o for o in rule.get("orders", []) if o not in config["orders"]]
        if unknown:
            raise SersError(f"{source}: training.overrides[{i}].orders: {unknown[0]!r} is not an order of orders "
                            f"({', '.join(config['orders'])})")
    if config["model"]["source"] == "path" and not config["model"]["path"]:
        raise SersError(f"{source}: model.path: required when model.source is 'path'")


EXPERIMENT_KEYS = ("tasks", "orders", "methods")


def apply_user_experiment(config: dict, overrides: dict | None) -> list[str]:
    """Make the user's config files define the experiment (tasks, orders, methods) as a whole.

    Snakemake merges a `--configfile` into the workflow's `config/config.yaml` mapping by mapping, so a
    file with `orders: {o1: [sa, pe]}` would also run the default's `order1` and synthesise its tasks.
    When `overrides` (the merged `--configfile`/`--config` values) set `tasks` or `orders`, none of the
    three keys comes from the default file: what the user left out falls back to the schema default for
    `methods`, to the orders' tasks for `tasks`, and to one order `order1` of `tasks` for `orders`.
    (`methods` alone is a list, which Snakemake replaces anyway: the default's tasks stay.)
    Changes `config` in place; returns the keys that were not the user's (for a log line).
    """
    overrides = overrides or {}
    if "tasks" not in overrides and "orders" not in overrides:
        return []
    filled = []
    for key in EXPERIMENT_KEYS:
        if key in overrides:
            config[key] = copy.deepcopy(overrides[key])
        else:
            config.pop(key, None)
            filled.append(key)
    orders, tasks = config.get("orders"), config.get("tasks")
    if "tasks" in filled and isinstance(orders, dict):
        config["tasks"] = list(dict.fromkeys(t for order in orders.values() if isinstance(order, list)
                                             for t in order))
    if "orders" in filled and isinstance(tasks, list):
        config["orders"] = {"order1": list(tasks)}
    return filled


def all_tasks(config: dict) -> list[str]:
    """Tasks in first-seen order over config.tasks and every order."""
    seen: dict[str, None] = dict.fromkeys(config["tasks"])
    for order in config["orders"].values():
        seen.update(dict.fromkeys(order))
    return list(seen)


def data_file(config: dict, task: str, split: str) -> str:
    """Path of one task's split, honouring data.overrides."""
    data = config["data"]
    name = data["overrides"].get(task, {}).get(split, data["files"][split])
    return str(Path(data["dir"]) / name.format(task=task))


def check_data_files(config: dict, source: str = "config") -> None:
    """Every task must exist in the data directory (its seeds file at least)."""
    for task in all_tasks(config):
        seeds = Path(data_file(config, task, "seeds"))
        if not seeds.is_file():
            raise SersError(f"{source}: task {task!r} is unknown to data.dir {config['data']['dir']!r} (no {seeds.name})")


def count_rows(path: str | Path) -> int:
    """Non-blank lines of a JSON Lines file (its rows; their content is checked where they are read)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def check_data_sizes(config: dict, source: str = "config", build_hint: str = "") -> None:
    """Refuse data files smaller than `data.min_rows` asks (e.g. the paper preset on the shipped sample)."""
    short = []
    for split, need in config["data"]["min_rows"].items():
        if not need:
            continue
        for task in all_tasks(config):
            path = Path(data_file(config, task, split))
            have = count_rows(path) if path.is_file() else 0
            if have < need:
                short.append(f"{path} has {have} rows, data.min_rows.{split} asks for {need}")
    if short:
        more = f" (and {len(short) - 3} more)" if len(short) > 3 else ""
        raise SersError(f"{source}: data.dir {config['data']['dir']!r} is smaller than this experiment needs: "
                        + "; ".join(short[:3]) + more + ". " + build_hint)


def task_filter_settings(config: dict, task: str) -> dict[str, Any]:
    """The exact thresholds one task's filter job of masked inputs uses (sers.filtering.settings_for_task)."""
    from .filtering import settings_for_task

    return settings_for_task(task, config["filter"]["defaults"], config["filter"]["tasks"].get(task))


def filter_settings(config: dict, kind: str, task: str) -> dict[str, Any]:
    """The thresholds of one filter job: SERS's per-task rules for masked inputs, SSR's rules for ICL pairs."""
    from .filtering import icl_settings

    return icl_settings(config["filter"]["icl"]) if kind == "icl" else task_filter_settings(config, task)


# SSR's KMeansSel (custom/niv2-c012/text2emb.py) embeds a real row's `input` field, not the prompt.
REAL_SELECTION = {"embed_text": "input"}


def selection_settings(config: dict, kind: str) -> dict[str, Any]:
    """selection.* for one chain — mask (SERS), icl (SSR) or real (replay-kmeans) — with
    selection.overrides[kind] on top."""
    settings = {k: v for k, v in config["selection"].items() if k != "overrides"}
    if kind == "real":
        settings.update(REAL_SELECTION)
    settings.update(config["selection"]["overrides"].get(kind, {}))
    return settings


def load_config(path: str | Path) -> dict:
    """Read a YAML config file safely and validate it."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SersError(f"{path}: cannot read configuration: {e}") from None
    return validate_config(config, str(path))


REPLICATE_SUFFIX = re.compile(r"-rep\d+$")


def training_settings(config: dict, order: str | None, method: str | None, stage: int | None) -> dict[str, Any]:
    """The training keys of one training job: `training.*`, then every rule of `training.overrides` that
    matches, in list order (a later rule wins). A rule matches when each selector it names holds:
    `orders` (a replicate "order1-rep2" counts as its order "order1"), `methods`, `stages` (1-based).
    The first stage is shared by every method but mtl, so it has no method: only rules without
    `methods` reach it. mtl's single training job has no order and no stage."""
    settings = {k: v for k, v in config["training"].items() if k != "overrides"}
    base_order = REPLICATE_SUFFIX.sub("", order) if order else None
    for rule in config["training"]["overrides"]:
        if "orders" in rule and base_order not in rule["orders"]:
            continue
        if "methods" in rule and method not in rule["methods"]:
            continue
        if "stages" in rule and stage not in rule["stages"]:
            continue
        settings.update(rule["set"])
    return settings
