# The comparison target: results/compare/{name}.md builds every run of config compare.{name} (methods x datasets x
# seeds, wsss/outputs/compare.py) through CAM -> IRN -> DeepLab -> CRF and tabulates them. Each run's gate verdicts are written
# whether they pass or not (cls_verdict, cam_verdict, seg_verdict), and a checkpoint per gate and comparison gathers
# them over all runs that reach it
# at once (so every run trains in parallel): a run stopped by a gate shows as stopped in the table instead of
# failing the whole target.


rule cls_verdict:
    input:
        heldout="results/{run}/cls/heldout.json",
    output:
        "results/{run}/cls/verdict.json",
    log:
        "logs/{run}/cls_verdict.log",
    benchmark:
        "benchmarks/{run}/cls_verdict.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("cls_gate", w.run),
    shell:
        f"{stage('cls_gate')} --params {{params.cfg:q}} --heldout {{input.heldout:q}} --verdict {{output:q}} > {{log:q}} 2>&1"


rule cam_verdict:
    input:
        run_dataset,
        model="results/{run}/cls/model.pt",
        cams=lambda w: cam_shards(w.run, run_cfg(w.run)["cls"]["train_split"]),
        calibration=lambda w: calibration_input(w.run, "cam.bg_score"),
    output:
        "results/{run}/cam/verdict.json",
    log:
        "logs/{run}/cam_verdict.log",
    benchmark:
        "benchmarks/{run}/cam_verdict.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=lambda w: gpus(w.run, "cls"),
    params:
        cfg=lambda w: stage_cfg("cam_gate", w.run),
        method=lambda w: run_cfg(w.run)["method"],
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["cls"]["train_split"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('cam_gate')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --cams {input.cams:q} --method {params.method:q} --model {input.model:q}"
        " --calibration {input.calibration:q} --device {params.device:q} --verdict {output:q} > {log:q} 2>&1"


rule seg_verdict:
    input:
        run_dataset,
        labels=seg_train_labels,
        model="results/{run}/deeplab/model.pt",
    output:
        "results/{run}/deeplab/verdict.json",
    log:
        "logs/{run}/seg_verdict.log",
    benchmark:
        "benchmarks/{run}/seg_verdict.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=lambda w: gpus(w.run, "seg"),
    params:
        cfg=lambda w: stage_cfg("seg_gate", w.run),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["seg"]["train_split"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('seg_gate')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --labels {input.labels:q} --model {input.model:q} --device {params.device:q}"
        " --verdict {output:q} > {log:q} 2>&1"


for _gate in GATE_VERDICTS:

    checkpoint:
        name:
            f"compare_{_gate}_gates"
        input:
            compare_verdicts(_gate),
        output:
            f"results/compare/{{name}}/{_gate}_gates.json",
        log:
            f"logs/compare_{{name}}/{_gate}_gates.log",
        benchmark:
            f"benchmarks/compare_{{name}}/{_gate}_gates.tsv"
        conda:
            "../envs/wsss.yaml"
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
            gpu=0,
        shell:
            f"{stage('compare')} --gather {{input:q}} --out {{output:q}} > {{log:q}} 2>&1"


rule compare:
    input:
        compare_inputs,
    output:
        table="results/compare/{name}.md",
        figure=report("results/compare/{name}.png", caption="../report/compare.rst", category="comparisons"),
        records="results/compare/{name}.json",
    log:
        "logs/compare_{name}.log",
    benchmark:
        "benchmarks/compare_{name}.tsv"
    wildcard_constraints:
        name="[A-Za-z0-9][A-Za-z0-9_-]*",  # the schema's comparison names; not results/compare/<name>/<gate>_gates.json
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        gpu=0,
    params:
        cfg=lambda w: compare_cfg(w.name),
    shell:
        f"{stage('compare')} --params {{params.cfg:q}} --root . --table {{output.table:q}} --figure {{output.figure:q}}"
        " --records {output.records:q} > {log:q} 2>&1"
