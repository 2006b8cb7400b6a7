# The comparison target: results/compare/{name}.md builds every run of config compare.{name} (methods x datasets x
# seeds, wsss/compare.py) through CAM -> IRN -> DeepLab -> CRF and tabulates them. Each run's gate verdicts are written
# whether they pass or not (cls_verdict, seg_verdict), and two checkpoints per comparison gather them over all runs
# at once (so every run trains in parallel): a run stopped by a gate shows as stopped in the table instead of
# failing the whole target.


rule cls_verdict:
    input:
        heldout="results/{run}/cls/heldout.json",
    output:
        "results/{run}/cls/verdict.json",
    params:
        cfg=lambda w: stage_cfg("cls_gate", w.run),
    log:
        "logs/{run}/cls_verdict.log",
    benchmark:
        "benchmarks/{run}/cls_verdict.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('cls_gate')} --params {{params.cfg:q}} --heldout {{input.heldout:q}} --verdict {{output:q}} > {{log:q}} 2>&1"


rule seg_verdict:
    input:
        run_dataset,
        labels=seg_train_labels,
        model="results/{run}/deeplab/model.pt",
    output:
        "results/{run}/deeplab/verdict.json",
    params:
        cfg=lambda w: stage_cfg("seg_gate", w.run),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["seg"]["train_split"],
        device=config["device"],
    log:
        "logs/{run}/seg_verdict.log",
    benchmark:
        "benchmarks/{run}/seg_verdict.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=lambda w: gpus(w.run, "seg"),
    conda:
        "../envs/wsss.yaml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('seg_gate')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --labels {input.labels:q} --model {input.model:q} --device {params.device:q}"
        " --verdict {output:q} > {log:q} 2>&1"


def compare_cls_verdicts(wildcards):
    return [f"results/{item['run']}/cls/verdict.json" for item in compare_runs(config, wildcards.name)]


def _passed(path):
    with open(path) as fh:
        return json.load(fh)["passed"]


def compare_passed_cls(name):
    """The comparison's runs whose cls gate passed (after checkpoint compare_cls_gates)."""
    checkpoints.compare_cls_gates.get(name=name)
    return [item["run"] for item in compare_runs(config, name) if _passed(f"results/{item['run']}/cls/verdict.json")]


def compare_seg_verdicts(wildcards):
    return [f"results/{run}/deeplab/verdict.json" for run in compare_passed_cls(wildcards.name)]


checkpoint compare_cls_gates:
    input:
        compare_cls_verdicts,
    output:
        "results/compare/{name}/cls_gates.json",
    log:
        "logs/compare_{name}/cls_gates.log",
    benchmark:
        "benchmarks/compare_{name}/cls_gates.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('compare')} --gather {{input:q}} --out {{output:q}} > {{log:q}} 2>&1"


checkpoint compare_seg_gates:
    input:
        compare_seg_verdicts,
    output:
        "results/compare/{name}/seg_gates.json",
    log:
        "logs/compare_{name}/seg_gates.log",
    benchmark:
        "benchmarks/compare_{name}/seg_gates.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('compare')} --gather {{input:q}} --out {{output:q}} > {{log:q}} 2>&1"


def compare_inputs(wildcards):
    """Per run of the comparison: its held-out report and cls verdict; past a passed cls gate its CAM and pseudo
    metrics and sweeps and the seg verdict; past a passed seg gate its DeepLab metrics."""
    if wildcards.name not in config.get("compare", {}):
        raise WorkflowError(f"config.yaml: compare.{wildcards.name}: no such comparison")
    files = [f"results/{item['run']}/cls/heldout.json" for item in compare_runs(config, wildcards.name)]
    files += compare_cls_verdicts(wildcards)
    passed = compare_passed_cls(wildcards.name)
    for run in passed:
        files += [f"results/{run}/cam_{SUMMARY['cam_split']}_{k}.json" for k in ("metrics", "sweep")]
        files += [f"results/{run}/pseudo_{SUMMARY['pseudo_split']}_{k}.json" for k in ("metrics", "sweep")]
    checkpoints.compare_seg_gates.get(name=wildcards.name)
    for run in passed:
        files.append(f"results/{run}/deeplab/verdict.json")
        if _passed(f"results/{run}/deeplab/verdict.json"):
            files.append(f"results/{run}/deeplab_{SUMMARY['seg_split']}_metrics.json")
    return files


def compare_cfg(name):
    """The compare stage's --params: a document of its own (the summary splits, the comparison's name and runs)."""
    return as_json({**SUMMARY, "name": name, "runs": compare_runs(config, name)})


rule compare:
    input:
        compare_inputs,
    output:
        table="results/compare/{name}.md",
        figure=report("results/compare/{name}.png", caption="../report/compare.rst", category="comparisons"),
        records="results/compare/{name}.json",
    params:
        cfg=lambda w: compare_cfg(w.name),
    log:
        "logs/compare_{name}.log",
    benchmark:
        "benchmarks/compare_{name}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('compare')} --params {{params.cfg:q}} --root . --table {{output.table:q}} --figure {{output.figure:q}}"
        " --records {output.records:q} > {log:q} 2>&1"
