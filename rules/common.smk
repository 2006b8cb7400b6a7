# Helpers shared by the .smk files: config validation, parameter serialisation, paths.

import json
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

from wsss.outputs.compare import compare_runs
from wsss.runtime.config import load_schema, run_config, seed_run_names, validate_config
from wsss.data.kinds import get_kind, preparer_params
from wsss.runtime.errors import InputError
from wsss.runtime.stage_config import stage_params

try:
    config.update(
        validate_config(
            config,
            load_schema(workflow.source_path("../schemas/config.schema.yaml")),
            source=" + ".join(
                [str(f) for f in workflow.configfiles]
                + (["--config"] if workflow.config_settings.overwrite_config else [])
            ),
        )
    )
except InputError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

# The interpreter that runs Snakemake also runs the stages (the same virtualenv); under
# --software-deployment-method conda the rule's environment provides `python` instead.
PYTHON = "python" if "conda" in str(workflow.deployment_settings.deployment_method) else sys.executable

DATASET_META = ["dataset.yaml", "classes.txt", "labels.tsv"]


def shell_word(value):
    """``value`` as one shell word inside a rule's ``shell:`` format string: quoted (a checkout under
    "My Projects/" stays one word) and with braces doubled, so that Snakemake's formatting leaves it as is."""
    return shlex.quote(str(value)).replace("{", "{{").replace("}", "}}")


BASEDIR = shell_word(workflow.basedir)


def stage_script(name):
    return shell_word(os.path.join(workflow.basedir, "stages", f"{name}.py"))


def stage(name):
    """Command prefix that runs stages/<name>.py, with this checkout's ``wsss`` importable in any environment."""
    return f"PYTHONPATH={BASEDIR} {shell_word(PYTHON)} {stage_script(name)}"


def lease_timeout_env():
    """``WSSS_GPU_LEASE_TIMEOUT=<s> `` for the lease of a GPU job when ``gpu_lease_timeout`` is set, else nothing
    (the job's environment decides; the command, hence reruns, stay unchanged by default)."""
    timeout = config.get("gpu_lease_timeout")
    return "" if timeout is None else f"WSSS_GPU_LEASE_TIMEOUT={float(timeout):g} "


def gpu_stage(name):
    """stage(name) for GPU jobs. At job time it first leases as many free GPUs as the job's gpu resource
    (wsss.runtime.gpu_lease, one lock file per GPU, sets CUDA_VISIBLE_DEVICES; 0 leases nothing). Plain stage(name)
    when the config pins the CPU."""
    if config["device"] == "cpu":
        return stage(name)
    return (
        f"{lease_timeout_env()}PYTHONPATH={BASEDIR} {shell_word(PYTHON)} -m wsss.runtime.gpu_lease {{resources.gpu}} --"
        f" {shell_word(PYTHON)} {stage_script(name)}"
    )


def train_stage(name):
    """gpu_stage(name) for a training stage. With N > 1 leased GPUs it runs under
    ``torchrun --standalone --nproc_per_node=N`` (one DDP process per GPU), else as one process (wsss.runtime.launch
    decides at job time, from the job's gpu resource). Plain stage(name) when the config pins the CPU."""
    if config["device"] == "cpu":
        return stage(name)
    return (
        f"{lease_timeout_env()}PYTHONPATH={BASEDIR} {shell_word(PYTHON)} -m wsss.runtime.launch {{resources.gpu}}"
        f" {stage_script(name)}"
    )


def as_json(obj):
    """Serialise params for a stage's --params; sorted keys keep the command (and reruns) stable."""
    return json.dumps(obj, sort_keys=True)


def stage_cfg(name, run):
    """The --params of stage ``name`` for ``run``: exactly the keys of its typed view (wsss.runtime.stage_config), so a
    changed value reruns exactly the stages that read it."""
    return as_json(stage_params(name, run_cfg(run), config))


def dataset_outputs(name):
    """The declared outputs of a prepared dataset: its metadata files, written last by the preparer."""
    return [f"resources/{name}/{f}" for f in DATASET_META]


DATASETS = config["datasets"]


def dataset_kind(name):
    """The registered kind (wsss.data.kinds) of dataset ``name``."""
    return get_kind(DATASETS[name]["kind"])


def datasets_where(local):
    """Wildcard constraint matching exactly the dataset names whose kind runs locally (downloads) or not (a pattern
    that matches nothing if none)."""
    names = [re.escape(n) for n in sorted(DATASETS) if dataset_kind(n).local == local]
    return "|".join(names) if names else "(?!)"


def dataset_inputs(wildcards):
    """Input function: the files a dataset's preparation reads, from its kind (a change to any of them prepares the
    dataset again; e.g. a folder dataset's images, labels CSV, masks and split lists)."""
    return dataset_kind(wildcards.dataset).inputs(DATASETS[wildcards.dataset])


def dataset_params(name):
    """A dataset entry as its preparer's --params JSON (without ``kind``, which picked the preparer; synth keys at
    their neutral values left out, see wsss.data.kinds.preparer_params). A changed key reruns the preparer."""
    return as_json(preparer_params(DATASETS[name]))


RUNS = sorted(config["runs"])


wildcard_constraints:
    run="|".join(RUNS),
    split=r"[A-Za-z0-9_][A-Za-z0-9_.-]*",  # the schema's split-name pattern
    shard=r"\d+",


def run_cfg(run):
    """Effective settings of a run (dataset, method, stage sections with the run's overrides)."""
    return run_config(config, run)


def dataset_root(run):
    return f"resources/{run_cfg(run)['dataset']}"


def run_dataset(wildcards):
    """Input function: the prepared dataset of the run."""
    return dataset_outputs(run_cfg(wildcards.run)["dataset"])


def gpus(run, section):
    """GPUs requested by this run's jobs of a stage section: none when the config pins the CPU."""
    return 0 if config["device"] == "cpu" else run_cfg(run)[section]["gpus"]


def cam_shards(run, split):
    """The shard folders of a split's CAMs (scatter); eval_cam gathers them."""
    n = run_cfg(run)["cam"]["shards"]
    return [f"results/{run}/cam/{split}/shard_{i}" for i in range(n)]


def calibration_input(run, *keys):
    """The run's calibration.json when one of ``keys`` ("section.key") is chosen without pixel labels (``auto``),
    else none."""
    cfg = run_cfg(run)
    auto = any(cfg[section][key] == "auto" for section, key in (k.split(".") for k in keys))
    return [f"results/{run}/calibration.json"] if auto else []


def pseudo_calibration_input(run):
    """The run's calibration_pseudo.json when irn.bg_threshold is auto, else none."""
    return [f"results/{run}/calibration_pseudo.json"] if run_cfg(run)["irn"]["bg_threshold"] == "auto" else []


def cam_source_split(run, split):
    """The inferred split whose CAMs cover evaluation split ``split`` (e.g. VOC train lies in train_aug)."""
    return run_cfg(run)["cam"]["eval"].get(split, split)


def ir_label_shards(run):
    """The IR label shard folders: shard i holds the labels of CAM shard i of the IRN training split."""
    n = run_cfg(run)["cam"]["shards"]
    return [f"results/{run}/ir_label/shard_{i}" for i in range(n)]


def pseudo_shards(run, split):
    """The pseudo-label shard folders of a split (shard i from CAM shard i)."""
    n = run_cfg(run)["cam"]["shards"]
    return [f"results/{run}/pseudo/{split}/shard_{i}" for i in range(n)]


def pseudo_source_split(run, split):
    """The split whose pseudo labels cover evaluation split ``split`` (e.g. VOC train lies in train_aug)."""
    return run_cfg(run)["irn"]["eval"].get(split, split)


def cls_init_model(run, section):
    """The trained classifier, an input of a training rule of ``section`` (irn, seg) only when its backbone
    initialises that network (pretrained: from_cls)."""
    if run_cfg(run)[section]["pretrained"] == "from_cls":
        return [f"results/{run}/cls/model.pt"]
    return []


def seg_train_labels(wildcards):
    """Input function: the pseudo-label shards DeepLab trains on; none when it trains on the GT masks."""
    cfg = run_cfg(wildcards.run)["seg"]
    return pseudo_shards(wildcards.run, cfg["train_split"]) if cfg["label_source"] == "pseudo" else []


def seg_shards(run, split, kind):
    """The shard folders of a split's logits (kind "seg") or CRF labels (kind "seg_crf")."""
    n = run_cfg(run)["seg"]["shards"]
    return [f"results/{run}/{kind}/{split}/shard_{i}" for i in range(n)]


SUMMARY = config["summary"]


def summary_entries():
    """Per run: the result files the summary reads (CAM and pseudo only for runs trained on pseudo labels)."""
    entries = []
    for run in RUNS:
        cfg = run_cfg(run)
        pseudo = cfg["seg"]["label_source"] == "pseudo"
        entries.append(
            {
                "run": run,
                "dataset": cfg["dataset"],
                "method": cfg["method"] if pseudo else "–",
                "labels": cfg["seg"]["label_source"],
                "cam": f"results/{run}/cam_{SUMMARY['cam_split']}_miou.txt" if pseudo else None,
                "pseudo": f"results/{run}/pseudo_{SUMMARY['pseudo_split']}_miou.txt" if pseudo else None,
                "deeplab": f"results/{run}/deeplab_{SUMMARY['seg_split']}_metrics.json",
                # check_pseudo on the pseudo labels DeepLab trains on: classes the classifier and they disagree on
                "coverage": f"results/{run}/pseudo_{cfg['seg']['train_split']}_coverage.json" if pseudo else None,
            }
        )
    return entries


def seed_groups():
    """Runs listing ``seeds``: base run -> its per-seed runs ({run}_s{k}, made by wsss.runtime.config), for the summary."""
    return {run: seed_run_names(run, e["seeds"]) for run, e in sorted(config["runs"].items()) if e.get("seeds")}


def report_inputs(wildcards):
    """Input function (unpack): what a run's report figures read; CAM/pseudo/cls/irn only for pseudo-label runs."""
    run = wildcards.run
    pseudo = run_cfg(run)["seg"]["label_source"] == "pseudo"
    cam_split, pseudo_split, seg_split = (SUMMARY[k] for k in ("cam_split", "pseudo_split", "seg_split"))
    return {
        "dataset": dataset_outputs(run_cfg(run)["dataset"]),
        "cams": cam_shards(run, cam_source_split(run, cam_split)) if pseudo else [],
        "pseudo": pseudo_shards(run, pseudo_source_split(run, pseudo_split)) if pseudo else [],
        "logits": seg_shards(run, seg_split, "seg"),
        "crf": seg_shards(run, seg_split, "seg_crf"),
        "cam_metrics": [f"results/{run}/cam_{cam_split}_metrics.json"] if pseudo else [],
        "pseudo_metrics": [f"results/{run}/pseudo_{pseudo_split}_metrics.json"] if pseudo else [],
        "seg_metrics": f"results/{run}/deeplab_{seg_split}_metrics.json",
        "train_logs": [f"results/{run}/{d}/train_log.csv" for d in (["cls", "irn"] if pseudo else []) + ["deeplab"]],
        # the oracle sweep of the random walk's threshold with the run's threshold drawn on it (a figure of its own)
        "pseudo_sweep": [f"results/{run}/pseudo_{pseudo_split}_sweep.png"] if pseudo else [],
        # not drawn: makes a run's report (the default target) run check_pseudo, whose warnings are in its log
        "coverage": [f"results/{run}/pseudo_{run_cfg(run)['seg']['train_split']}_coverage.json"] if pseudo else [],
        # not read: puts the dataset report (its figure) into the run's HTML report
        "dataset_report": f"results/{run}/dataset_report.png",
    }


def predict_shards(run, name):
    """The shard folders of one image folder's predictions (scatter); predict gathers them."""
    n = run_cfg(run)["seg"]["shards"]
    return [f"results/{run}/predict_shards/{name}/shard_{i}" for i in range(n)]


def predict_threads(run):
    """CRF worker processes of a prediction shard (1 without CRF)."""
    seg = run_cfg(run)["seg"]
    return seg["crf_workers"] if seg["predict_crf"] else 1


# Dataset preparation (rules/data.smk).


def prepare_dataset_rule_params():
    return {
        "cfg": lambda w: dataset_params(w.dataset),
        "kind": lambda w: DATASETS[w.dataset]["kind"],
        "out": lambda w, output: os.path.dirname(output[0]),
    }


# Method comparisons (rules/compare.smk): gate verdicts and the inputs of the checkpoints and the table.


GATE_VERDICTS = {"cls": "cls/verdict.json", "cam": "cam/verdict.json", "seg": "deeplab/verdict.json"}


def _passed(path):
    with open(path) as fh:
        return json.load(fh)["passed"]


def compare_passed(name, gate):
    """The comparison's runs that passed every gate up to ``gate`` (after its checkpoint compare_<gate>_gates)."""
    getattr(checkpoints, f"compare_{gate}_gates").get(name=name)
    return [run for run in compare_reaching(name, gate) if _passed(f"results/{run}/{GATE_VERDICTS[gate]}")]


def compare_reaching(name, gate):
    """The comparison's runs that reach ``gate``: all for the first, else those past the previous gate."""
    gates = list(GATE_VERDICTS)
    if gate == gates[0]:
        return [item["run"] for item in compare_runs(config, name)]
    return compare_passed(name, gates[gates.index(gate) - 1])


def compare_verdicts(gate):
    return lambda w: [f"results/{run}/{GATE_VERDICTS[gate]}" for run in compare_reaching(w.name, gate)]


def compare_inputs(wildcards):
    """Per run of the comparison: its held-out report and cls verdict; past the cls gate its CAM metrics and sweep
    and the cam verdict; past the cam gate its pseudo-label metrics and sweep and the seg verdict; past the seg gate
    its DeepLab metrics. A gate's checkpoint gathers the verdicts of every run that reaches it."""
    if wildcards.name not in config.get("compare", {}):
        raise WorkflowError(f"config.yaml: compare.{wildcards.name}: no such comparison")
    name = wildcards.name
    files = [f"results/{item['run']}/cls/heldout.json" for item in compare_runs(config, name)]
    files += compare_verdicts("cls")(wildcards)
    for run in compare_passed(name, "cls"):
        files += [f"results/{run}/cam_{SUMMARY['cam_split']}_{k}.json" for k in ("metrics", "sweep")]
    files += compare_verdicts("cam")(wildcards)
    for run in compare_passed(name, "cam"):
        files += [f"results/{run}/pseudo_{SUMMARY['pseudo_split']}_{k}.json" for k in ("metrics", "sweep")]
    files += compare_verdicts("seg")(wildcards)
    files += [f"results/{run}/deeplab_{SUMMARY['seg_split']}_metrics.json" for run in compare_passed(name, "seg")]
    return files


def compare_cfg(name):
    """The compare stage's --params: a document of its own (the summary splits, the comparison's name and runs)."""
    return as_json({**SUMMARY, "name": name, "runs": compare_runs(config, name)})
