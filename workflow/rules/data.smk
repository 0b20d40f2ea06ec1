# Stage data: phantom CTs and radiographs (without real data), standardised CT volumes,
# the OAI manifest and the train/val/test splits. The input functions (common.smk) pick
# phantom or real folders from config["data"]; VOLUMES (the {volume} wildcard values) is
# computed at parse time by kneesynth.data.ingest.volume_names without rendering or reading
# any image, and OAI_BATCHES (raw OAI) by kneesynth.data.oai_raw.oai_batches. One ingest job
# per volume and one crop job per raw OAI batch: a bad input fails its own job, and
# --keep-going reports every bad one in one run without deleting the good ones.
DATA_DATA = [
    *expand("results/ct/{volume}.nii.gz", volume=VOLUMES),
    "results/splits/volumes.tsv",
    "results/oai/manifest.tsv",
    "results/splits/participants.tsv",
]


if not DATA_REAL_CT:

    rule phantom_ct:
        output:
            volumes=expand("results/phantom/sicas/{volume}.nii", volume=VOLUMES),
            parameters="results/phantom/sicas_parameters.tsv",
        log:
            "logs/phantom_ct/phantom_ct.log",
        benchmark:
            "benchmarks/phantom_ct/phantom_ct.tsv"
        conda:
            "../../envs/kneesynth.yaml"
        threads: 1
        params:
            phantom=config["phantom"],
            seed=config["seed"],
        script:
            "../scripts/phantom_ct.py"


if not DATA_REAL_OAI:

    rule phantom_oai:
        output:
            oai=directory("results/phantom/oai"),
            truth="results/phantom/oai_truth.tsv",
        log:
            "logs/phantom_oai/phantom_oai.log",
        benchmark:
            "benchmarks/phantom_oai/phantom_oai.tsv"
        conda:
            "../../envs/kneesynth.yaml"
        threads: 1
        params:
            oai=config["phantom"]["oai"],
            seed=config["seed"],
            split_fractions=config["splits"]["oai_fractions"],
        script:
            "../scripts/phantom_oai.py"


rule ingest_ct:
    input:
        volume=ct_source,
    output:
        volume="results/ct/{volume}.nii.gz",
    log:
        "logs/ingest_ct/{volume}.log",
    benchmark:
        "benchmarks/ingest_ct/{volume}.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        ingest=INGEST_CT,
    script:
        "../scripts/ingest_ct.py"


rule split_volumes:
    output:
        splits="results/splits/volumes.tsv",
    log:
        "logs/split_volumes/split_volumes.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        volumes=VOLUMES,
        splits=SPLITS_VOLUMES,
        seed=config["seed"],
        views=config["projection"]["n_views"],
    script:
        "../scripts/split_volumes.py"


if DATA_OAI_RAW:

    rule crop_oai_radiographs:
        input:
            folder=oai_batch_folder,
        output:
            crops=directory("results/oai/crops/{batch}"),
        log:
            "logs/crop_oai_radiographs/{batch}.log",
        benchmark:
            "benchmarks/crop_oai_radiographs/{batch}.tsv"
        conda:
            "../../envs/kneesynth.yaml"
        threads: 1
        params:
            oai_dir=config["data"]["oai_dir"],
            ingest=INGEST_OAI,
        script:
            "../scripts/crop_oai_radiographs.py"


rule ingest_oai:
    input:
        oai=oai_source,
        kl_tables=oai_kl_tables,
        crops=oai_crop_dirs,
    output:
        manifest="results/oai/manifest.tsv",
        participants="results/splits/participants.tsv",
    log:
        "logs/ingest_oai/ingest_oai.log",
    benchmark:
        "benchmarks/ingest_oai/ingest_oai.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        oai_format=config["data"].get("oai_format", "chen") if DATA_REAL_OAI else "chen",
        ingest=INGEST_OAI,
        splits=SPLITS_OAI,
        seed=config["seed"],
    script:
        "../scripts/ingest_oai.py"
