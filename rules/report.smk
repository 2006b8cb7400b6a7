# Figures of each run for `snakemake --report report.html <targets>`: target results/{run}/report/done.

REPORT_IMAGES = 4  # images per panel figure (the first ones of each evaluation split)


report: "../report/workflow.rst"


rule report_figures:
    input:
        unpack(report_inputs),
    output:
        cams=report(
            "results/{run}/report/cam_overlays.png",
            caption="../report/cam_overlays.rst",
            category="{run}",
            subcategory="CAMs",
        ),
        pseudo=report(
            "results/{run}/report/pseudo_vs_gt.png",
            caption="../report/pseudo_vs_gt.rst",
            category="{run}",
            subcategory="pseudo labels",
        ),
        seg=report(
            "results/{run}/report/deeplab_crf.png",
            caption="../report/deeplab_crf.rst",
            category="{run}",
            subcategory="DeepLab",
        ),
        iou=report(
            "results/{run}/report/class_iou.png",
            caption="../report/class_iou.rst",
            category="{run}",
            subcategory="metrics",
        ),
        progression=report(
            "results/{run}/report/miou_progression.png",
            caption="../report/miou_progression.rst",
            category="{run}",
            subcategory="metrics",
        ),
        loss=report(
            "results/{run}/report/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="{run}",
            subcategory="training",
        ),
        done="results/{run}/report/done",
    log:
        "logs/{run}/report_figures.log",
    benchmark:
        "benchmarks/{run}/report_figures.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    params:
        cfg=lambda w: as_json({"run": w.run, "images": REPORT_IMAGES, "bg_score": run_cfg(w.run)["cam"]["bg_score"]}),
        dataset=lambda w: dataset_root(w.run),
        splits=lambda w: " ".join(
            f"--{k.replace('_', '-')} {shell_word(SUMMARY[k])}" for k in ("cam_split", "pseudo_split", "seg_split")
        ),
        out_dir=lambda w, output: os.path.dirname(output.done),
    shell:
        f"{stage('report_figures')} --params {{params.cfg:q}} --dataset {{params.dataset:q}} {{params.splits}}"
        " --cams {input.cams:q} --pseudo {input.pseudo:q} --logits {input.logits:q} --crf {input.crf:q}"
        " --cam-metrics {input.cam_metrics:q} --pseudo-metrics {input.pseudo_metrics:q} --seg-metrics {input.seg_metrics:q}"
        " --train-logs {input.train_logs:q} --out-dir {params.out_dir:q} --done {output.done:q} > {log:q} 2>&1"
