# DeepLabV2 on the pseudo labels (or GT masks): training -> logits (sharded) -> dense CRF (sharded, parallel)
# -> evaluation with and without CRF; and the cross-run summary table.


rule train_seg:
    input:
        run_dataset,
        labels=seg_train_labels,
        cls_model=lambda w: cls_init_model(w.run, "seg"),
    output:
        model="results/{run}/deeplab/model.pt",
        log_csv="results/{run}/deeplab/train_log.csv",
    log:
        "logs/{run}/train_seg.log",
    benchmark:
        "benchmarks/{run}/train_seg.tsv"
    priority: 10  # on the critical path: scheduled before the evaluation-split jobs
    conda:
        "../envs/wsss.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=lambda w: gpus(w.run, "seg"),
    params:
        cfg=lambda w: stage_cfg("train_seg", w.run),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["seg"]["train_split"],
        cls_model=lambda w, input: f"--cls-model {shell_word(input.cls_model[0])}" if input.cls_model else "",
        out_dir=lambda w, output: os.path.dirname(output.model),
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {train_stage('train_seg')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {params.split:q} --labels {input.labels:q} {params.cls_model} --device {params.device:q}"
        " --weights-cache resources/weights"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule seg_gate:
    input:
        run_dataset,
        labels=seg_train_labels,
        model="results/{run}/deeplab/model.pt",
    output:
        "results/{run}/deeplab/gate.json",
    log:
        "logs/{run}/seg_gate.log",
    benchmark:
        "benchmarks/{run}/seg_gate.tsv"
    priority: 10  # runs next to the first infer_seg shard (eval_seg waits for it)
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
        " --out {output:q} > {log:q} 2>&1"


rule infer_seg:
    input:
        run_dataset,
        model="results/{run}/deeplab/model.pt",
    output:
        directory("results/{run}/seg/{split}/shard_{shard}"),
    log:
        "logs/{run}/infer_seg/{split}_{shard}.log",
    benchmark:
        "benchmarks/{run}/infer_seg/{split}_{shard}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: gpus(w.run, "seg"),
    params:
        cfg=lambda w: stage_cfg("infer_seg", w.run),
        dataset=lambda w: dataset_root(w.run),
        shards=lambda w: run_cfg(w.run)["seg"]["shards"],
        device=config["device"],
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('infer_seg')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {wildcards.split:q} --shard {wildcards.shard:q} --shards {params.shards:q} --model {input.model:q}"
        " --device {params.device:q} --out {output:q} > {log:q} 2>&1"


rule crf:
    input:
        run_dataset,
        logits="results/{run}/seg/{split}/shard_{shard}",
    output:
        directory("results/{run}/seg_crf/{split}/shard_{shard}"),
    log:
        "logs/{run}/crf/{split}_{shard}.log",
    benchmark:
        "benchmarks/{run}/crf/{split}_{shard}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: lambda w: run_cfg(w.run)["seg"]["crf_workers"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("crf", w.run),
        dataset=lambda w: dataset_root(w.run),
        shards=lambda w: run_cfg(w.run)["seg"]["shards"],
    shell:
        f"OMP_NUM_THREADS=1 {stage('crf')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --split {wildcards.split:q} --shard {wildcards.shard:q} --shards {params.shards:q} --logits {input.logits:q}"
        " --workers {threads} --out {output:q} > {log:q} 2>&1"


rule eval_seg:
    input:
        run_dataset,
        gate="results/{run}/deeplab/gate.json",  # no final score when DeepLab did not fit its labels
        logits=lambda w: seg_shards(w.run, w.split, "seg"),
        crf=lambda w: seg_shards(w.run, w.split, "seg_crf"),
    output:
        miou="results/{run}/deeplab_{split}_miou.txt",
        metrics="results/{run}/deeplab_{split}_metrics.json",
    log:
        "logs/{run}/eval_seg_{split}.log",
    benchmark:
        "benchmarks/{run}/eval_seg_{split}.tsv"
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
        f"OMP_NUM_THREADS={{threads}} {stage('eval_seg')} --dataset {{params.dataset:q}} --split {{wildcards.split:q}}"
        " --logits {input.logits:q} --crf {input.crf:q} --miou {output.miou:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule summary:
    input:
        [path for e in summary_entries() for path in (e["cam"], e["pseudo"], e["deeplab"], e["coverage"]) if path],
    output:
        "results/summary.md",
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
        gpu=0,
    params:
        cfg=as_json({**SUMMARY, "runs": summary_entries(), "seed_groups": seed_groups()}),
    shell:
        f"{stage('summary')} --params {{params.cfg:q}} --out {{output:q}} > {{log:q}} 2>&1"
