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
