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
    params:
        cfg=lambda w: as_json({"run": w.run, "images": REPORT_IMAGES, "bg_score": run_cfg(w.run)["cam"]["bg_score"]}),
        dataset=lambda w: dataset_root(w.run),
        splits=lambda w: " ".join(
            f"--{k.replace('_', '-')} {SUMMARY[k]}" for k in ("cam_split", "pseudo_split", "seg_split")
        ),
        out_dir=lambda w, output: os.path.dirname(output.done),
    log:
        "logs/{run}/report_figures.log",
    benchmark:
        "benchmarks/{run}/report_figures.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/wsss.yaml"
    shell:
        f"{stage('report_figures')} --params {{params.cfg:q}} --dataset {{params.dataset}} {{params.splits}}"
        " --cams {input.cams} --pseudo {input.pseudo} --logits {input.logits} --crf {input.crf}"
        " --cam-metrics {input.cam_metrics} --pseudo-metrics {input.pseudo_metrics} --seg-metrics {input.seg_metrics}"
        " --train-logs {input.train_logs} --out-dir {params.out_dir} --done {output.done} > {log} 2>&1"
