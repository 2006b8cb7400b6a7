# VWL classifier -> multi-scale CAMs (sharded) -> CAM evaluation.


rule train_cls:
    input:
        run_dataset,
    output:
        model="results/{run}/cls/model.pt",
        log_csv="results/{run}/cls/train_log.csv",
        heldout="results/{run}/cls/heldout.json",
    log:
        "logs/{run}/train_cls.log",
    benchmark:
        "benchmarks/{run}/train_cls.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=lambda w: gpus(w.run, "cls"),
    params:
        cfg=lambda w: stage_cfg("train_cls", w.run),
        method=lambda w: run_cfg(w.run)["method"],
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["cls"]["train_split"],
        out_dir=lambda w, output: os.path.dirname(output.model),
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {train_stage('train_cls')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --method {params.method:q} --device {params.device:q} --weights-cache resources/weights"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule cls_gate:
    input:
        heldout="results/{run}/cls/heldout.json",
    output:
        "results/{run}/cls/gate.json",
    log:
        "logs/{run}/cls_gate.log",
    benchmark:
        "benchmarks/{run}/cls_gate.tsv"
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
        f"{stage('cls_gate')} --params {{params.cfg:q}} --heldout {{input.heldout:q}} --out {{output:q}} > {{log:q}} 2>&1"


rule infer_cam:
    input:
        run_dataset,
        model="results/{run}/cls/model.pt",
        gate="results/{run}/cls/gate.json",  # the DAG stops at cls_gate when the classifier did not learn
    output:
        directory("results/{run}/cam/{split}/shard_{shard}"),
    log:
        "logs/{run}/infer_cam/{split}_{shard}.log",
    benchmark:
        "benchmarks/{run}/infer_cam/{split}_{shard}.tsv"
    # the training split is on the critical path; the evaluation split waits for free cores
    priority: lambda w: 10 if w.split == run_cfg(w.run)["irn"]["train_split"] else 0
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=lambda w: gpus(w.run, "cls"),
    params:
        cfg=lambda w: stage_cfg("infer_cam", w.run),
        method=lambda w: run_cfg(w.run)["method"],
        dataset=lambda w: dataset_root(w.run),
        shards=lambda w: run_cfg(w.run)["cam"]["shards"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('infer_cam')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {wildcards.split:q} --shard {wildcards.shard:q} --shards {params.shards:q} --method {params.method:q}"
        " --model {input.model:q} --device {params.device:q} --out {output:q} > {log:q} 2>&1"


rule eval_cam:
    input:
        run_dataset,
        cams=lambda w: cam_shards(w.run, cam_source_split(w.run, w.split)),
        calibration=lambda w: calibration_input(w.run, "cam.bg_score"),
    output:
        miou="results/{run}/cam_{split}_miou.txt",
        metrics="results/{run}/cam_{split}_metrics.json",
        sweep="results/{run}/cam_{split}_sweep.json",
        plot=report(
            "results/{run}/cam_{split}_sweep.png",
            caption="../report/cam_sweep.rst",
            category="{run}",
            subcategory="CAMs",
        ),
    log:
        "logs/{run}/eval_cam_{split}.log",
    benchmark:
        "benchmarks/{run}/eval_cam_{split}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("eval_cam", w.run),
        dataset=lambda w: dataset_root(w.run),
    shell:
        f"{stage('eval_cam')} --params {{params.cfg:q}} --dataset {{params.dataset:q}} --split {{wildcards.split:q}}"
        " --cams {input.cams:q} --miou {output.miou:q} --metrics {output.metrics:q} --sweep {output.sweep:q}"
        " --plot {output.plot:q} --calibration {input.calibration:q} > {log:q} 2>&1"


rule calibrate:
    input:
        run_dataset,
        model="results/{run}/cls/model.pt",
        cams=lambda w: cam_shards(w.run, run_cfg(w.run)["cls"]["train_split"]),
    output:
        "results/{run}/calibration.json",
    log:
        "logs/{run}/calibrate.log",
    benchmark:
        "benchmarks/{run}/calibrate.tsv"
    priority: 10  # on the critical path when a threshold is auto
    conda:
        "../envs/wsss.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda w: gpus(w.run, "cls"),
    params:
        cfg=lambda w: stage_cfg("calibrate", w.run),
        method=lambda w: run_cfg(w.run)["method"],
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["cls"]["train_split"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('calibrate')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --cams {input.cams:q} --method {params.method:q} --model {input.model:q}"
        " --device {params.device:q} --out {output:q} > {log:q} 2>&1"


rule cam_gate:
    input:
        run_dataset,
        model="results/{run}/cls/model.pt",
        cams=lambda w: cam_shards(w.run, run_cfg(w.run)["cls"]["train_split"]),
        calibration=lambda w: calibration_input(w.run, "cam.bg_score"),
    output:
        "results/{run}/cam/gate.json",
    log:
        "logs/{run}/cam_gate.log",
    benchmark:
        "benchmarks/{run}/cam_gate.tsv"
    priority: 10  # IRNet's labels wait for it
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
        " --calibration {input.calibration:q} --device {params.device:q} --out {output:q} > {log:q} 2>&1"
