"""Config validation against the JSON schema, filling in defaults, with one-line errors naming the key."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from wsss.data.kinds import builtin_datasets, dataset_splits, kind_names
from wsss.methods import get_method, method_names
from wsss.outputs.compare import expand_compare
from wsss.runtime.errors import InputError
from wsss.runtime.io import paths_overlap


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator so that ``default`` values are inserted for missing properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _strip_defaults(node: Any) -> Any:
    """A copy of a schema without ``default`` keywords (for per-run overrides, which must stay sparse)."""
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def _inline_refs(node: Any, root: dict[str, Any]) -> Any:
    """Replace local ``{"$ref": "#/definitions/x"}`` nodes by their targets (the schema has no cycles), and
    ``{"$override": "x"}`` by definition ``x`` without defaults."""
    if isinstance(node, dict):
        if set(node) == {"$override"}:
            return _strip_defaults(_inline_refs(root["definitions"][node["$override"]], root))
        if set(node) == {"$ref"} and node["$ref"].startswith("#/"):
            target: Any = root
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            return _inline_refs(target, root)
        return {k: _inline_refs(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, root) for v in node]
    return node


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read a YAML JSON-schema file, with local ``$ref`` inlined so that defaults below them apply; the run's
    ``method`` enum comes from the method registry (:func:`wsss.methods.method_names`), the dataset's ``kind`` enum
    and its per-kind definitions (``definitions.<kind>``) from the dataset-kind registry (:mod:`wsss.data.kinds`)."""
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    definitions = schema.get("definitions", {})
    method = definitions.get("run", {}).get("properties", {}).get("method")
    if method is not None:
        method["enum"] = list(method_names())
    dataset = definitions.get("dataset")
    if dataset is not None:
        dataset["properties"]["kind"]["enum"] = list(kind_names())
        dataset["allOf"] = [
            {"if": {"properties": {"kind": {"const": kind}}}, "then": {"$ref": f"#/definitions/{kind}"}}
            for kind in kind_names()
        ]
    return _inline_refs(schema, schema)


def validate_config(config: dict[str, Any], schema: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in; the first error raises InputError.

    The error reads ``<source>: <dotted.key>: <problem>``, e.g. ``config.yaml: datasets.synth.seed: 'x' is not of
    type 'integer'``.
    """
    config = copy.deepcopy(config)
    _check_name_types(config, source)
    _fill_dataset_kinds(config)
    _fill_synth_num_classes(config)
    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = validator_class(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise InputError(source, f"{key}: {err.message}")
    try:
        check_synth_classes(config)
        expand_compare(config)
        expand_seeds(config)
        check_runs(config)
        check_output_paths(config)
    except InputError as err:
        raise InputError(source, err.problem) from None
    return config


NAMED_SECTIONS = ("datasets", "runs", "predict")


def _check_name_types(config: Any, source: str) -> None:
    """Dataset, run and predict names are strings: YAML reads ``2024:`` as a number and ``yes:`` as a boolean,
    which the schema's name pattern and ``sorted()`` cannot handle; one line says to quote them."""
    if not isinstance(config, dict):
        raise InputError(source, f"(top level): {config!r:.40} is not a mapping of sections")
    for section in NAMED_SECTIONS:
        entries = config.get(section)
        if not isinstance(entries, dict):
            continue
        for name in entries:
            if not isinstance(name, str):
                raise InputError(
                    source,
                    f"{section}.{name}: YAML reads this name as a {type(name).__name__}; "
                    f"names are strings: quote it ('{name}':)",
                )


SEEDED_SECTIONS = ("cls", "irn", "seg")


def seed_run_names(run: str, seeds: list[int]) -> list[str]:
    """The per-seed runs of a run that lists ``seeds``: ``{run}_s{k}``."""
    return [f"{run}_s{k}" for k in seeds]


def expand_seeds(config: dict[str, Any]) -> None:
    """Add, for every run listing ``seeds``, one ordinary run ``{run}_s{k}`` per seed: the same entry without
    ``seeds``, with ``cls.seed``, ``irn.seed`` and ``seg.seed`` set to k. Idempotent (a validated config validates
    again); a configured run of that name with other settings is an error."""
    runs = config["runs"]
    for run, entry in list(runs.items()):
        for k, name in zip(entry.get("seeds") or [], seed_run_names(run, entry.get("seeds") or [])):
            derived = {key: copy.deepcopy(v) for key, v in entry.items() if key != "seeds"}
            for section in SEEDED_SECTIONS:
                derived[section] = {**derived.get(section, {}), "seed": k}
            if name in runs and runs[name] != derived:
                raise InputError(
                    "config",
                    f"runs.{name}: already configured, and seed {k} of runs.{run} would create it; rename the run",
                )
            runs[name] = derived


def _fill_dataset_kinds(config: dict[str, Any]) -> None:
    """Before validation: the built-in datasets (:func:`wsss.data.kinds.builtin_datasets`: synth, voc, coco) always
    exist, and an entry under one of those names without a ``kind`` is of that kind."""
    datasets = config.get("datasets")
    if datasets is None:
        datasets = config["datasets"] = {}
    if not isinstance(datasets, dict):
        return  # the schema reports it
    builtin = builtin_datasets()
    for name in builtin:
        datasets.setdefault(name, {})
    for name, entry in datasets.items():
        if name in builtin and isinstance(entry, dict) and "kind" not in entry:
            entry["kind"] = name


def _fill_synth_num_classes(config: dict[str, Any]) -> None:
    """Before validation (which fills in the default num_classes, 6): a synth dataset that lists ``classes`` and
    leaves out ``num_classes`` has as many classes as it names."""
    datasets = config["datasets"]
    if not isinstance(datasets, dict):
        return
    for entry in datasets.values():
        if (
            isinstance(entry, dict)
            and entry.get("kind") == "synth"
            and "num_classes" not in entry
            and isinstance(entry.get("classes"), list)
            and entry["classes"]
        ):
            entry["num_classes"] = len(entry["classes"])


def check_synth_classes(config: dict[str, Any]) -> None:
    """A validated synth dataset that names its ``classes`` has ``num_classes`` equal to their count."""
    for name, entry in config["datasets"].items():
        if entry["kind"] == "synth" and entry["classes"] is not None and entry["num_classes"] != len(entry["classes"]):
            count = len(entry["classes"])
            raise InputError(
                "config",
                f"datasets.{name}.num_classes: {entry['num_classes']} does not match "
                f"datasets.{name}.classes, which names {count}; leave num_classes out or set "
                f"it to {count}",
            )


def training_split(splits: list[str]) -> str:
    """The split the stages train on unless configured: train_aug when the dataset has it (VOC), else train."""
    return "train_aug" if "train_aug" in splits else "train" if "train" in splits else splits[0]


def check_runs(config: dict[str, Any]) -> None:
    """Cross-key checks of a validated config: every run names a dataset, its splits exist, its classifier's
    method accepts its classifier settings (e.g. a training crop that reaches VWL's hybrid-pooling pyramid), and its
    IR-label thresholds are ordered."""
    for run in sorted(config["runs"]):
        cfg = run_config(config, run)
        check_stage_keys(cfg, f"runs.{run}", config["device"])
        fg, bg = cfg["irn"]["conf_fg"], cfg["irn"]["conf_bg"]
        if "auto" not in (fg, bg) and not bg < fg:
            raise InputError("config", f"runs.{run}.irn.conf_bg: {bg} must be below irn.conf_fg {fg}")
        problem = get_method(cfg["method"]).check_config(cfg["cls"])
        if problem is not None:
            raise InputError("config", f"runs.{run}.cls.{problem}")


OUTPUT_ROOT = "results"
DATASET_ROOT = "resources"


def check_output_paths(config: dict[str, Any]) -> None:
    """No input folder is, lies inside or contains a folder the pipeline writes and replaces whole: a dataset's
    ``root`` against every ``resources/<dataset>`` and ``results/`` (a VOC root may lie inside its own
    ``resources/<name>``, where downloads land), a ``predict`` folder against ``results/``. Relative paths start
    at the working directory, as in the stages."""
    outputs = [f"{DATASET_ROOT}/{name}" for name in sorted(config["datasets"])] + [OUTPUT_ROOT]
    for name, entry in sorted(config["datasets"].items()):
        root = entry.get("root")
        if not isinstance(root, str):
            continue
        own = f"{DATASET_ROOT}/{name}"
        for out in outputs:
            if (
                entry["kind"] == "voc"
                and out == own
                and Path(os.path.realpath(own)) in Path(os.path.realpath(root)).parents
            ):
                continue
            if paths_overlap(root, out):
                raise InputError(
                    "config",
                    f"datasets.{name}.root: {root!r} overlaps the output folder {out!r} "
                    f"(equal, inside or containing it), which the pipeline replaces; move "
                    f"the data outside {DATASET_ROOT}/ and {OUTPUT_ROOT}/",
                )
    for name, folder in sorted(config["predict"].items()):
        if paths_overlap(folder, OUTPUT_ROOT):
            raise InputError(
                "config",
                f"predict.{name}: {folder!r} overlaps the output folder {OUTPUT_ROOT!r} "
                f"(equal, inside or containing it); move the images elsewhere",
            )


def check_stage_keys(cfg: dict[str, Any], where: str, device: str) -> None:
    """The cross-key constraints the stages check when they start (hours into a run, possibly), checked here first,
    each with one line naming the keys: range pairs in order, batches that split into micro-batches on every GPU,
    the IRNet crop the pair radius needs, and the classifier's held-out images for ``epochs: auto``."""
    for section, key in (("irn", "scale_range"), ("cls", "resize_long")):
        low, high = cfg[section][key]
        if low > high:
            raise InputError("config", f"{where}.{section}.{key}: [{low}, {high}] must be [low, high] with low <= high")
    for section in ("cls", "irn", "seg"):
        batch, accumulate = cfg[section]["batch_size"], cfg[section]["accumulate"]
        world = max(1, cfg[section]["gpus"]) if device != "cpu" else 1
        if batch % (accumulate * world):
            gpus = f" on each of {world} GPUs ({section}.gpus)" if world > 1 else ""
            raise InputError(
                "config",
                f"{where}.{section}.batch_size: {batch} does not split into {section}.accumulate "
                f"{accumulate} micro-batches{gpus}; make batch_size a multiple of "
                f"{accumulate * world}",
            )
    crop, radius = cfg["irn"]["crop"], cfg["irn"]["radius"]
    if crop // 4 <= 2 * (radius - 1):
        raise InputError(
            "config",
            f"{where}.irn.crop: {crop} is too small for irn.radius {radius}: crop/4 must exceed "
            f"2*(radius-1), so crop > {8 * (radius - 1)}",
        )
    if cfg["cls"]["epochs"] == "auto" and not cfg["cls"]["holdout_fraction"] > 0:
        raise InputError("config", f"{where}.cls.epochs: auto needs held-out images: set cls.holdout_fraction above 0")
    seg = cfg["seg"]
    if seg["style"] == "caffe" and seg["pretrained"] in ("imagenet", "from_cls"):
        raise InputError(
            "config",
            f"{where}.seg.style: 'caffe' expects converted Caffe weights (a local file in "
            f"seg.pretrained) or none, not seg.pretrained {seg['pretrained']}",
        )


STAGE_SECTIONS = ("cls", "cam", "irn", "seg")


def run_config(config: dict[str, Any], run: str) -> dict[str, Any]:
    """The effective settings of one run: its dataset and method, and every stage section with its overrides.

    ``config`` must be validated (defaults filled). Overrides replace values key by key (lists whole).
    """
    try:
        entry = config["runs"][run]
    except KeyError:
        raise InputError("config", f"runs.{run}: no such run (known: {sorted(config['runs'])})") from None
    if entry["dataset"] not in config["datasets"]:
        raise InputError(
            "config",
            f"runs.{run}.dataset: {entry['dataset']!r} is not a dataset (datasets: {sorted(config['datasets'])})",
        )
    merged = {"run": run, "dataset": entry["dataset"], "method": entry["method"]}
    for section in STAGE_SECTIONS:
        merged[section] = {**config[section], **entry.get(section, {})}
    kind = config["datasets"][entry["dataset"]]["kind"]
    splits = dataset_splits(config["datasets"][entry["dataset"]])
    # a folder's own lists are never picked implicitly (a user's train_aug.txt is not VOC's): it trains on train
    default = "train" if kind == "folder" else training_split(splits)
    for section in ("cls", "irn", "seg"):
        key = f"runs.{run}.{section}.train_split"
        if merged[section]["train_split"] is None:
            merged[section]["train_split"] = default
        elif merged[section]["train_split"] not in splits:
            raise InputError(
                "config",
                f"{key}: {merged[section]['train_split']!r} is not a split of dataset "
                f"{entry['dataset']!r} (splits: {splits})",
            )
    for section in ("cam", "irn"):
        if merged[section]["eval"] is None:
            merged[section]["eval"] = (
                {"train": "train_aug"} if kind != "folder" and {"train", "train_aug"} <= set(splits) else {}
            )
    return merged


def default_config(schema_path: str | Path | None = None) -> dict[str, Any]:
    """The schema's defaults: a validated config with one run on the synthetic dataset (benchmarks and tests read
    defaults here rather than repeating them)."""
    path = schema_path or Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
    return validate_config({"runs": {"default": {"dataset": "synth"}}}, load_schema(path))
