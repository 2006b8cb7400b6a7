# IRN refinement: CAMs -> IR labels (dense CRF, sharded like the CAMs) -> IRNet -> pseudo labels (random walk,
# sharded) -> pseudo-label evaluation.


rule cam_to_ir_label:
    input:
        run_dataset,
        cams=lambda w: f"results/{w.run}/cam/{run_cfg(w.run)['irn']['train_split']}/shard_{w.shard}",
        calibration=lambda w: calibration_input(w.run, "irn.conf_fg", "irn.conf_bg"),
        gate="results/{run}/cam/gate.json",  # the DAG stops at cam_gate when the CAMs do not localise
    output:
        directory("results/{run}/ir_label/shard_{shard}"),
    log:
        "logs/{run}/cam_to_ir_label/{shard}.log",
    benchmark:
        "benchmarks/{run}/cam_to_ir_label/{shard}.tsv"
    priority: 10  # on the critical path: scheduled before the evaluation-split jobs
    conda:
        "../envs/wsss.yaml"
    threads: lambda w: run_cfg(w.run)["irn"]["crf_workers"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("cam_to_ir_label", w.run),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["irn"]["train_split"],
        shards=lambda w: run_cfg(w.run)["cam"]["shards"],
    shell:
        f"OMP_NUM_THREADS=1 {stage('cam_to_ir_label')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --shard {wildcards.shard:q} --shards {params.shards:q} --cams {input.cams:q}"
        " --calibration {input.calibration:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule train_irn:
    input:
        run_dataset,
        labels=lambda w: ir_label_shards(w.run),
        cls_model=lambda w: cls_init_model(w.run, "irn"),
    output:
        model="results/{run}/irn/model.pt",
        log_csv="results/{run}/irn/train_log.csv",
    log:
        "logs/{run}/train_irn.log",
    benchmark:
        "benchmarks/{run}/train_irn.tsv"
    priority: 10  # on the critical path: scheduled before the evaluation-split jobs
    conda:
        "../envs/wsss.yaml"
    threads: 2
    resources:
        mem_mb=12000,
        runtime=720,
        gpu=lambda w: gpus(w.run, "irn"),
    params:
        cfg=lambda w: stage_cfg("train_irn", w.run),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["irn"]["train_split"],
        cls_model=lambda w, input: f"--cls-model {shell_word(input.cls_model[0])}" if input.cls_model else "",
        out_dir=lambda w, output: os.path.dirname(output.model),
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {train_stage('train_irn')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --labels {input.labels:q} {params.cls_model} --device {params.device:q}"
        " --weights-cache resources/weights --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule make_pseudo:
    input:
        run_dataset,
        cams="results/{run}/cam/{split}/shard_{shard}",
        model="results/{run}/irn/model.pt",
        calibration=lambda w: pseudo_calibration_input(w.run),
    output:
        directory("results/{run}/pseudo/{split}/shard_{shard}"),
    log:
        "logs/{run}/make_pseudo/{split}_{shard}.log",
    benchmark:
        "benchmarks/{run}/make_pseudo/{split}_{shard}.tsv"
    # the training split is on the critical path; the evaluation split waits for free cores
    priority: lambda w: 10 if w.split == run_cfg(w.run)["seg"]["train_split"] else 0
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=480,
        gpu=lambda w: gpus(w.run, "irn"),
    params:
        cfg=lambda w: stage_cfg("make_pseudo", w.run),
        dataset=lambda w: dataset_root(w.run),
        shards=lambda w: run_cfg(w.run)["cam"]["shards"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('make_pseudo')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {wildcards.split:q} --shard {wildcards.shard:q} --shards {params.shards:q} --cams {input.cams:q}"
        " --model {input.model:q} --calibration {input.calibration:q} --device {params.device:q} --out {output:q}"
        " > {log:q} 2>&1"


rule calibrate_pseudo:
    input:
        run_dataset,
        cls_model="results/{run}/cls/model.pt",
        irn_model="results/{run}/irn/model.pt",
        cams=lambda w: cam_shards(w.run, run_cfg(w.run)["cls"]["train_split"]),
    output:
        "results/{run}/calibration_pseudo.json",
    log:
        "logs/{run}/calibrate_pseudo.log",
    benchmark:
        "benchmarks/{run}/calibrate_pseudo.tsv"
    priority: 10  # on the critical path when bg_threshold is auto
    conda:
        "../envs/wsss.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda w: gpus(w.run, "irn"),
    params:
        cfg=lambda w: stage_cfg("calibrate_pseudo", w.run),
        method=lambda w: run_cfg(w.run)["method"],
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["cls"]["train_split"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('calibrate_pseudo')} --params {{params.cfg:q}}"
        " --dataset {params.dataset:q} --split {params.split:q} --cams {input.cams:q} --method {params.method:q}"
        " --cls-model {input.cls_model:q} --irn-model {input.irn_model:q} --device {params.device:q}"
        " --out {output:q} > {log:q} 2>&1"


rule sweep_pseudo:
    input:
        run_dataset,
        cams=lambda w: cam_shards(w.run, pseudo_source_split(w.run, w.split)),
        model="results/{run}/irn/model.pt",
        calibration=lambda w: pseudo_calibration_input(w.run),
    output:
        sweep="results/{run}/pseudo_{split}_sweep.json",
        plot=report(
            "results/{run}/pseudo_{split}_sweep.png",
            caption="../report/pseudo_sweep.rst",
            category="{run}",
            subcategory="pseudo labels",
        ),
    log:
        "logs/{run}/sweep_pseudo_{split}.log",
    benchmark:
        "benchmarks/{run}/sweep_pseudo_{split}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda w: gpus(w.run, "irn"),
    params:
        cfg=lambda w: stage_cfg("sweep_pseudo", w.run),
        dataset=lambda w: dataset_root(w.run),
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('sweep_pseudo')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {wildcards.split:q} --cams {input.cams:q} --model {input.model:q}"
        " --calibration {input.calibration:q} --device {params.device:q} --out {output.sweep:q} --plot {output.plot:q}"
        " > {log:q} 2>&1"


rule eval_pseudo:
    input:
        run_dataset,
        labels=lambda w: pseudo_shards(w.run, pseudo_source_split(w.run, w.split)),
    output:
        miou="results/{run}/pseudo_{split}_miou.txt",
        metrics="results/{run}/pseudo_{split}_metrics.json",
    log:
        "logs/{run}/eval_pseudo_{split}.log",
    benchmark:
        "benchmarks/{run}/eval_pseudo_{split}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    params:
        dataset=lambda w: dataset_root(w.run),
    shell:
        f"{stage('eval_pseudo')} --dataset {{params.dataset:q}} --split {{wildcards.split:q}} --labels {{input.labels:q}}"
        " --miou {output.miou:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule check_pseudo:
    input:
        run_dataset,
        cams=lambda w: cam_shards(w.run, w.split),
        labels=lambda w: pseudo_shards(w.run, w.split),
    output:
        "results/{run}/pseudo_{split}_coverage.json",
    log:
        "logs/{run}/check_pseudo_{split}.log",
    benchmark:
        "benchmarks/{run}/check_pseudo_{split}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("check_pseudo", w.run),
        dataset=lambda w: dataset_root(w.run),
    shell:
        f"{stage('check_pseudo')} --params {{params.cfg:q}} --dataset {{params.dataset:q}} --split {{wildcards.split:q}}"
        " --cams {input.cams:q} --labels {input.labels:q} --out {output:q} > {log:q} 2>&1"
