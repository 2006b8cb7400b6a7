# Datasets in the VOC-layout contract under resources/{dataset}/ (see wsss/data/dataset.py): one rule prepares a
# dataset of any kind registered in wsss/data/kinds.py (synth, voc, coco, folder); its inputs, threads and resources
# come from the kind; config `datasets:` names the datasets, each of one kind.


def prepare_dataset_rule_params():
    return {
        "cfg": lambda w: dataset_params(w.dataset),
        "kind": lambda w: DATASETS[w.dataset]["kind"],
        "out": lambda w, output: os.path.dirname(output[0]),
    }


rule prepare_dataset:
    input:
        dataset_inputs,
    output:
        dataset_outputs("{dataset}"),
    wildcard_constraints:
        dataset=datasets_where(local=False),
    params:
        **prepare_dataset_rule_params(),
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "benchmarks/prepare_{dataset}.tsv"
    threads: lambda w: dataset_kind(w.dataset).threads(DATASETS[w.dataset])
    resources:
        mem_mb=lambda w: dataset_kind(w.dataset).mem_mb,
        runtime=lambda w: dataset_kind(w.dataset).runtime,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
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
