# WSSS pipeline: image-level labels -> VWL CAMs -> IRNet pseudo labels -> DeepLabV2.
# Run `snakemake --cores all` for the default target (the synthetic run); see README.md.

from snakemake.utils import min_version

min_version("9.19")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cam.smk"
include: "rules/irn.smk"
include: "rules/seg.smk"
include: "rules/predict.smk"
include: "rules/report.smk"
include: "rules/compare.smk"


# The default target: the whole synthetic run, CAM -> pseudo labels -> DeepLab (+CRF) on its val split.
rule all:
    default_target: True
    input:
        expand("results/synth/{stage}_val_miou.txt", stage=["cam", "pseudo", "deeplab"]),
        "results/synth/report/done",  # its report figures (seconds): `snakemake --report report.html` shows them
