# The comparison target: results/compare/{name}.md builds every run of config compare.{name} (methods x datasets x
# seeds, wsss/compare.py) through CAM -> IRN -> DeepLab -> CRF and tabulates them. The gate verdicts are checkpoints:
# a run stopped by a gate shows as stopped in the table instead of failing the whole target.


checkpoint cls_verdict:
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


checkpoint seg_verdict:
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


def compare_inputs(wildcards):
    """Per run of the comparison: its held-out report and cls verdict; past a passed cls gate its CAM and pseudo
    metrics and sweeps and the seg verdict; past a passed seg gate its DeepLab metrics."""
    if wildcards.name not in config.get("compare", {}):
        raise WorkflowError(f"config.yaml: compare.{wildcards.name}: no such comparison")
    files = []
    for item in compare_runs(config, wildcards.name):
        res = f"results/{item['run']}"
        verdict = checkpoints.cls_verdict.get(run=item["run"]).output[0]
        files += [f"{res}/cls/heldout.json", verdict]
        if not json.load(open(verdict))["passed"]:
            continue
        files += [f"{res}/cam_{SUMMARY['cam_split']}_{k}.json" for k in ("metrics", "sweep")]
        files += [f"{res}/pseudo_{SUMMARY['pseudo_split']}_{k}.json" for k in ("metrics", "sweep")]
        verdict = checkpoints.seg_verdict.get(run=item["run"]).output[0]
        files.append(verdict)
        if json.load(open(verdict))["passed"]:
            files.append(f"{res}/deeplab_{SUMMARY['seg_split']}_metrics.json")
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
