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
