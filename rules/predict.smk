# The trained DeepLab leaves results/: predictions on folders of new images (config `predict:`, sharded like
# infer_seg, optional dense CRF), a TorchScript export that loads without this package, and the PASCAL VOC
# test-server archive of a split's CRF labels.

PREDICT = config["predict"]
# {name} matches the configured folder names only (never anything when there are none)
PREDICT_NAME = "|".join(re.escape(n) for n in sorted(PREDICT)) or "(?!)"


rule predict_shard:
    input:
        run_dataset,
        model="results/{run}/deeplab/model.pt",
        gate="results/{run}/deeplab/gate.json",  # seg_gate: DeepLab fits its labels
        images=lambda w: PREDICT[w.name],
    output:
        temp(directory(f"results/{{run}}/predict_shards/{{name,{PREDICT_NAME}}}/shard_{{shard}}")),
    params:
        cfg=lambda w: stage_cfg("predict", w.run),
        dataset=lambda w: dataset_root(w.run),
        shards=lambda w: run_cfg(w.run)["seg"]["shards"],
        device=config["device"],
    log:
        "logs/{run}/predict/{name}_{shard}.log",
    benchmark:
        "benchmarks/{run}/predict/{name}_{shard}.tsv"
    threads: lambda w: predict_threads(w.run)
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: gpus(w.run, "seg"),
    conda:
        "../envs/wsss.yaml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {gpu_stage('predict')} --params {{params.cfg:q}} --images {{input.images:q}}"
        " --dataset {params.dataset:q} --model {input.model:q} --shard {wildcards.shard:q} --shards {params.shards:q}"
        " --workers {threads} --device {params.device:q} --out {output:q} > {log:q} 2>&1"


rule predict:
    input:
        lambda w: predict_shards(w.run, w.name),
    output:
        directory(f"results/{{run}}/predict/{{name,{PREDICT_NAME}}}"),
    log:
        "logs/{run}/predict/{name}.log",
    benchmark:
        "benchmarks/{run}/predict/{name}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('predict_merge')} --shards {{input:q}} --out {{output:q}} > {{log:q}} 2>&1"


rule export_model:
    input:
        run_dataset,
        model="results/{run}/deeplab/model.pt",
        gate="results/{run}/deeplab/gate.json",  # seg_gate: DeepLab fits its labels
    output:
        ts="results/{run}/deeplab/model.ts",
        json="results/{run}/deeplab/model.json",
    params:
        cfg=lambda w: stage_cfg("export_model", w.run),
        dataset=lambda w: dataset_root(w.run),
    log:
        "logs/{run}/export_model.log",
    benchmark:
        "benchmarks/{run}/export_model.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {stage('export_model')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --model {input.model:q} --run {wildcards.run:q} --ts {output.ts:q} --json {output.json:q} > {log:q} 2>&1"


rule voc_submission:
    input:
        run_dataset,
        crf=lambda w: seg_shards(w.run, run_cfg(w.run)["seg"]["submission_split"], "seg_crf"),
    output:
        "results/{run}/voc_test_submission.tar.gz",
    params:
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["seg"]["submission_split"],
    log:
        "logs/{run}/voc_submission.log",
    benchmark:
        "benchmarks/{run}/voc_submission.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('voc_submission')} --dataset {{params.dataset:q}} --split {{params.split:q}} --crf {{input.crf:q}}"
        " --out {output:q} > {log:q} 2>&1"
