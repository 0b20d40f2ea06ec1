# Stage segmentation: contour and contour + bone maps of every DRR (Mei et al.), and a figure
# of a few views. VOLUMES comes from common.smk.

SEG_FIGURES = ["results/figures/segmentation_examples.png"]
# the stage target `segmentation` builds the example figure too
SEG_SEGMENTATION = [
    *expand("results/segmentation/{volume}.npz", volume=VOLUMES),
    *SEG_FIGURES,
]

SEG_FIGURE_VOLUMES = VOLUMES[: config["segmentation"].get("figure_volumes", 3)]


rule segment_drr:
    input:
        drr="results/drr/{volume}.npz",
    output:
        segmentation="results/segmentation/{volume}.npz",
    log:
        "logs/segment_drr/{volume}.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        segmentation=SEGMENTATION_MASKS,
    script:
        "../scripts/segment_drr.py"


rule segmentation_figure:
    input:
        drr=expand("results/drr/{volume}.npz", volume=SEG_FIGURE_VOLUMES),
        segmentation=expand(
            "results/segmentation/{volume}.npz", volume=SEG_FIGURE_VOLUMES
        ),
    output:
        report(
            "results/figures/segmentation_examples.png",
            caption="../report/segmentation_examples.rst",
            category="Study A",
            subcategory="segmentation",
        ),
    log:
        "logs/segmentation_figure/segmentation_figure.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        segmentation=config["segmentation"],
    script:
        "../scripts/segmentation_figure.py"
