"""Train the KL classifiers of one arm (every task and seed of the job) and write predictions."""

from kneesynth.workflow import run_script


def as_list(paths):
    """A named output (or a param) is a str when it holds one item, else a list."""
    return [paths] if isinstance(paths, str) else list(paths)


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.classify import parse_arm, run_arm

    arm = parse_arm(snakemake.params.arm)
    tasks, seeds = as_list(snakemake.params.tasks), list(snakemake.params.seeds)
    # outputs are expand(task, seed) in that order (task-major)
    keys = [(task, seed) for task in tasks for seed in seeds]
    predictions = as_list(snakemake.output.predictions)
    histories = as_list(snakemake.output.history)
    synthetic = {arm.generator: snakemake.input.synthetic} if arm.generator else {}
    run_arm(
        arm.name,
        tasks,
        seeds,
        snakemake.input.manifest,
        synthetic,
        snakemake.params.classifiers,
        prediction_paths=dict(zip(keys, predictions, strict=True)),
        history_paths=dict(zip(tasks, histories, strict=True)),
        state_root=snakemake.params.state_dir,
        device=device_for(snakemake.params.compute),
        compute=snakemake.params.compute,
    )


run_script(main, snakemake)
