# Datasets in the VOC-layout contract under resources/{dataset}/ (see wsss/data/dataset.py): one preparer per
# dataset kind (synth, voc, coco, folder); config `datasets:` names the datasets, each of one kind.


rule prepare_synth:
    output:
        dataset_outputs("{dataset}"),
    wildcard_constraints:
        dataset=datasets_of("synth"),
    params:
        cfg=lambda w: dataset_params(w.dataset),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "benchmarks/prepare_{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_synth')} --params {{params.cfg:q}} --out {{params.out:q}} > {{log:q}} 2>&1"


# Downloads need the internet, which cluster compute nodes often lack: run them on the submitting host.
localrules:
    prepare_voc,


rule prepare_voc:
    output:
        dataset_outputs("{dataset}"),
    wildcard_constraints:
        dataset=datasets_of("voc"),
    params:
        cfg=lambda w: dataset_params(w.dataset),
        lists=f"{workflow.basedir}/wsss/data/voc_lists",
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "benchmarks/prepare_{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_voc')} --params {{params.cfg:q}} --lists {{params.lists:q}} --out {{params.out:q}}"
        " > {log:q} 2>&1"


rule prepare_coco:
    output:
        dataset_outputs("{dataset}"),
    wildcard_constraints:
        dataset=datasets_of("coco"),
    params:
        cfg=lambda w: dataset_params(w.dataset),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "benchmarks/prepare_{dataset}.tsv"
    threads: lambda w: DATASETS[w.dataset]["workers"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_coco')} --params {{params.cfg:q}} --out {{params.out:q}} > {{log:q}} 2>&1"


rule prepare_folder:
    input:
        folder_inputs,
    output:
        dataset_outputs("{dataset}"),
    wildcard_constraints:
        dataset=datasets_of("folder"),
    params:
        cfg=lambda w: dataset_params(w.dataset),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "benchmarks/prepare_{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_folder')} --params {{params.cfg:q}} --out {{params.out:q}} > {{log:q}} 2>&1"


# Before anything trains: what the run's labels can teach (README "Gates"); feeds the HTML report.
rule dataset_report:
    input:
        run_dataset,
    output:
        json="results/{run}/dataset_report.json",
        md="results/{run}/dataset_report.md",
        html="results/{run}/dataset_report.html",
        png=report(
            "results/{run}/dataset_report.png",
            caption="../report/dataset_report.rst",
            category="{run}",
            subcategory="data",
        ),
    params:
        cfg=lambda w: as_json({"run": w.run}),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["cls"]["train_split"],
    log:
        "logs/{run}/dataset_report.log",
    benchmark:
        "benchmarks/{run}/dataset_report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('dataset_report')} --params {{params.cfg:q}} --dataset {{params.dataset:q}} --split {{params.split:q}}"
        " --json {output.json:q} --md {output.md:q} --html {output.html:q} --png {output.png:q} > {log:q} 2>&1"
