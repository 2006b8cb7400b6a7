# The trained DeepLab leaves results/: predictions on folders of new images (config `predict:`, sharded like
# infer_seg, optional dense CRF), TorchScript, torch.export and ONNX exports that load without this package, and
# the PASCAL VOC test-server archive of a split's CRF labels.

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
    log:
        "logs/{run}/predict/{name}_{shard}.log",
    benchmark:
        "benchmarks/{run}/predict/{name}_{shard}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: lambda w: predict_threads(w.run)
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: gpus(w.run, "seg"),
    params:
        cfg=lambda w: stage_cfg("predict", w.run),
        dataset=lambda w: dataset_root(w.run),
        shards=lambda w: run_cfg(w.run)["seg"]["shards"],
        device=config["device"],
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
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
        gpu=0,
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
    log:
        "logs/{run}/export_model.log",
    benchmark:
        "benchmarks/{run}/export_model.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("export_model", w.run),
        dataset=lambda w: dataset_root(w.run),
    shell:
        f"OMP_NUM_THREADS={{threads}} {stage('export_model')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --model {input.model:q} --run {wildcards.run:q} --ts {output.ts:q} --json {output.json:q} > {log:q} 2>&1"


rule export_program:
    input:
        run_dataset,
        model="results/{run}/deeplab/model.pt",
        gate="results/{run}/deeplab/gate.json",  # seg_gate: DeepLab fits its labels
    output:
        "results/{run}/deeplab/model.pt2",
    log:
        "logs/{run}/export_program.log",
    benchmark:
        "benchmarks/{run}/export_program.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=0,
    params:
        cfg=lambda w: stage_cfg("export_program", w.run),
        dataset=lambda w: dataset_root(w.run),
    shell:
        f"OMP_NUM_THREADS={{threads}} {stage('export_program')} --params {{params.cfg:q}} --dataset {{params.dataset:q}}"
        " --model {input.model:q} --out {output:q} > {log:q} 2>&1"


rule export_onnx:
    input:
        "results/{run}/deeplab/model.pt2",
    output:
        "results/{run}/deeplab/model.onnx",
    log:
        "logs/{run}/export_onnx.log",
    benchmark:
        "benchmarks/{run}/export_onnx.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=0,
    shell:
        f"OMP_NUM_THREADS={{threads}} {stage('export_onnx')} --program {{input:q}} --out {{output:q}} > {{log:q}} 2>&1"


rule voc_submission:
    input:
        run_dataset,
        crf=lambda w: seg_shards(w.run, run_cfg(w.run)["seg"]["submission_split"], "seg_crf"),
    output:
        "results/{run}/voc_test_submission.tar.gz",
    log:
        "logs/{run}/voc_submission.log",
    benchmark:
        "benchmarks/{run}/voc_submission.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    params:
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["seg"]["submission_split"],
    shell:
        f"{stage('voc_submission')} --dataset {{params.dataset:q}} --split {{params.split:q}} --crf {{input.crf:q}}"
        " --out {output:q} > {log:q} 2>&1"
