# Datasets in the VOC-layout contract under resources/{dataset}/ (see wsss/data/dataset.py): one rule prepares a
# dataset of any kind registered in wsss/data/kinds.py (synth, voc, coco, folder); its inputs, threads and resources
# come from the kind; config `datasets:` names the datasets, each of one kind.


rule prepare_dataset:
    input:
        dataset_inputs,
    output:
        dataset_outputs("{dataset}"),
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "benchmarks/prepare_{dataset}.tsv"
    wildcard_constraints:
        dataset=datasets_where(local=False),
    conda:
        "../envs/wsss.yaml"
    threads: lambda w: dataset_kind(w.dataset).threads(DATASETS[w.dataset])
    resources:
        mem_mb=lambda w: dataset_kind(w.dataset).mem_mb,
        runtime=lambda w: dataset_kind(w.dataset).runtime,
        gpu=0,
    params:
        **prepare_dataset_rule_params(),
    shell:
        f"{stage('prepare_dataset')} --kind {{params.kind:q}} --params {{params.cfg:q}} --out {{params.out:q}}"
        " > {log:q} 2>&1"


# Downloads need the internet, which cluster compute nodes often lack: kinds marked local (voc) run on the
# submitting host.
localrules:
    prepare_dataset_local,


use rule prepare_dataset as prepare_dataset_local with:
    wildcard_constraints:
        dataset=datasets_where(local=True),


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
    log:
        "logs/{run}/dataset_report.log",
    benchmark:
        "benchmarks/{run}/dataset_report.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    params:
        cfg=lambda w: as_json({"run": w.run}),
        dataset=lambda w: dataset_root(w.run),
        split=lambda w: run_cfg(w.run)["cls"]["train_split"],
    shell:
        f"{stage('dataset_report')} --params {{params.cfg:q}} --dataset {{params.dataset:q}} --split {{params.split:q}}"
        " --json {output.json:q} --md {output.md:q} --html {output.html:q} --png {output.png:q} > {log:q} 2>&1"
