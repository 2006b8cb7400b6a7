# Datasets in the VOC-layout contract under resources/{dataset}/ (see wsss/data/dataset.py).


rule prepare_synth:
    output:
        dataset_outputs("synth"),
    params:
        cfg=as_json(config["datasets"]["synth"]),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_synth.log",
    benchmark:
        "benchmarks/prepare_synth.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_synth')} --params {{params.cfg:q}} --out {{params.out}} > {{log}} 2>&1"


# Downloads need the internet, which cluster compute nodes often lack: run them on the submitting host.
localrules:
    prepare_voc,


rule prepare_voc:
    output:
        dataset_outputs("voc"),
    params:
        cfg=as_json(config["datasets"]["voc"]),
        lists=f"{workflow.basedir}/wsss/data/voc_lists",
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_voc.log",
    benchmark:
        "benchmarks/prepare_voc.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_voc')} --params {{params.cfg:q}} --lists {{params.lists:q}} --out {{params.out}} > {{log}} 2>&1"


rule prepare_coco:
    output:
        dataset_outputs("coco"),
    params:
        cfg=as_json(config["datasets"]["coco"]),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/prepare_coco.log",
    benchmark:
        "benchmarks/prepare_coco.tsv"
    threads: config["datasets"]["coco"]["workers"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('prepare_coco')} --params {{params.cfg:q}} --out {{params.out}} > {{log}} 2>&1"
