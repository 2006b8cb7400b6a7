# Helpers shared by the .smk files: config validation, parameter serialisation, paths.

import json
import os
import sys

from snakemake.exceptions import WorkflowError

from wsss.config import load_schema, validate_config
from wsss.errors import InputError

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


def stage(name):
    """Command prefix that runs stages/<name>.py."""
    return f"{PYTHON} {workflow.basedir}/stages/{name}.py"


def as_json(obj):
    """Serialise params for a stage's --params; sorted keys keep the command (and reruns) stable."""
    return json.dumps(obj, sort_keys=True)


def dataset_outputs(name):
    """The declared outputs of a prepared dataset: its metadata files, written last by the preparer."""
    return [f"resources/{name}/{f}" for f in DATASET_META]
