"""The SLURM profile on a real single-node SLURM cluster on localhost (root only; .ci/run installs slurm-wlm).

A tiny demo (data stages and one small training run) goes through `--profile workflow/profiles/slurm` with the
partition overridden to a non-default test partition; SLURM's own records (slurmctld's job table and the
job-completion log) must show every non-local job ran there, in that partition, with the CPUs, memory, time limit
and GPUs the profile asks for, and completed. A deliberately failing rule must be recorded FAILED by SLURM and make
Snakemake exit non-zero. The daemons are ended by PID afterwards.
"""

import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from slurm_cluster import SlurmCluster, why_not_available

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` runs the unit layer alone

pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm is not installed")

PROFILE = REPO / "workflow" / "profiles" / "slurm"
PARTITION = "lgseg_test"  # not the cluster's default partition: proves the override reached sbatch
WORKERS = 2  # preprocess.workers: the threads, hence the CPUs, of demo_scenes/preprocess/annotation_masks
TINY = {"demo": {"seed": 17, "num_train": 4, "num_val": 2, "num_test": 1, "vertex_spacing": 0.15,
                 "objects_per_room": [6, 10]},
        "preprocess": {"scenes_per_shard": 4, "workers": WORKERS},
        "annotation": {"ratios": [0.5]},
        "train": {"voxel_size": 0.3, "epochs": 1, "milestones": [1], "workers": 0}}
SNAKEMAKE_TIMEOUT = 900


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _train_requests_gpus() -> bool:
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return "gpus" in schema["properties"]["train"]["properties"]


@pytest.fixture(scope="module")
def cluster():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    # a node big enough for the profile's largest requests (declared only: nothing is enforced without cgroups)
    slurm = SlurmCluster(cpus=32, mem_mb=262144, gpus=2, partitions={"main": True, PARTITION: False})
    reason = slurm.start()
    if reason:
        pytest.skip(reason)
    try:
        yield slurm
    finally:
        slurm.stop()


def _snakemake(cluster, workdir, snakefile, *args):
    """Snakemake through the SLURM profile, the partition overridden (test-only conveniences: the first status check
    after 2 s instead of the profile's delay, and SLURM logs of successful jobs kept for inspection)."""
    defaults = {**_profile()["default-resources"], "slurm_partition": PARTITION}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
               "--profile", str(PROFILE), "--default-resources", *(f"{k}={v}" for k, v in defaults.items()),
               "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs", *args]
    result = cluster.run(command, timeout=SNAKEMAKE_TIMEOUT, cwd=workdir)
    run_id = re.search(r"SLURM run ID: (\S+)", result.stderr)
    return result, run_id.group(1) if run_id else None


def _mb(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", value).groups()
    return float(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[unit]


def _submitted(stderr: str) -> dict[str, tuple[str, int]]:
    """SLURM job id -> (rule, threads), from Snakemake's job blocks and its "submitted with SLURM jobid" lines."""
    blocks = {}
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", stderr, flags=re.M):
        threads = re.search(r"^    threads: (\d+)$", body, flags=re.M)
        jobid = re.search(r"^    jobid: (\d+)$", body, flags=re.M).group(1)
        blocks[jobid] = (rule, int(threads.group(1)) if threads else 1)
    return {slurm_id: blocks[jobid]
            for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", stderr)}


def _expected(rule: str, threads: int, key: str):
    profile = _profile()
    value = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}[key]
    return eval(str(value), {"threads": threads, "attempt": 1})  # the profile's expressions, as Snakemake does


def test_demo_data_stages_and_training_run_as_slurm_jobs_with_the_profile_resources(cluster, tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    gpus = _train_requests_gpus()
    if gpus:
        config["train"]["gpus"] = 1
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    targets = ["data/processed/demo/splits/train.txt", "data/processed/demo/class_stats.csv",
               "data/processed/demo/masks/annotated_0.5.npz", "runs/demo/scratch/train_summary.json"]
    result, run_id = _snakemake(cluster, tmp_path, REPO / "Snakefile", "--configfile", str(tmp_path / "tiny.yaml"),
                                "--jobs", "3", *targets)
    log = result.stdout[-4000:] + result.stderr[-8000:]
    assert result.returncode == 0, log
    assert run_id, log
    for target in targets:
        assert (tmp_path / target).exists(), target

    # what Snakemake ran: rules as cluster jobs (with their threads), localrules on this host
    submitted = _submitted(result.stderr)
    remote = sorted(rule for rule, _ in submitted.values())
    local = re.findall(r"^localrule (\w+):$", result.stderr, flags=re.M)
    assert {"demo_scenes", "check_raw", "label_map", "preprocess", "splits", "annotation_masks", "class_stats",
            "train"} <= set(remote) | set(local), log
    assert {"demo_scenes", "preprocess", "train"} <= set(remote), log  # the heavy ones never run locally
    assert remote.count("preprocess") == 2, log  # 7 scenes, 4 per shard
    assert {t for r, t in submitted.values() if r == "preprocess"} == {WORKERS}, log  # so 2 CPUs are asked for

    # what SLURM ran: slurmctld's job table (finished jobs kept an hour) and the job-completion log
    jobs = {i: job for i, job in cluster.jobs().items() if job["JobName"] == run_id}
    done = {i: rec for i, rec in cluster.completions().items() if rec["Name"] == run_id}
    assert set(jobs) == set(done) == set(submitted), log
    for job_id, job in jobs.items():
        rule, threads = submitted[job_id]
        record = done[job_id]
        what = f"SLURM job {job_id} ({rule}, {threads} threads): {job}"
        assert re.fullmatch(rf"rule_{rule}(_wildcards_.*)?", job["Comment"]), what
        assert record["JobState"] == job["JobState"] == "COMPLETED", what
        assert record["ExitCode"] == "0:0" and record["NodeList"] == "lgsegnode", what
        assert record["Partition"] == job["Partition"] == PARTITION, what
        assert int(job["CPUs/Task"]) == int(record["ProcCnt"]) == _expected(rule, threads, "cpus_per_task"), what
        assert abs(_mb(job["MinMemoryNode"]) - _expected(rule, threads, "mem_mb")) < 1, what
        assert int(record["TimeLimit"]) == _expected(rule, threads, "runtime"), what
        if rule == "train" and gpus:
            assert job.get("TresPerJob") == "gres:gpu:1", what
        else:
            assert "gpu" not in job.get("TresPerJob", ""), what
        # SLURM's own output of each job goes where the README says
        slurm_log = tmp_path / ".snakemake" / "slurm_logs" / f"rule_{rule}"
        assert job["StdOut"].startswith(f"{slurm_log}/") and job["StdOut"].endswith(f"/{job_id}.log"), what
        assert Path(job["StdOut"]).exists(), what
    assert (tmp_path / "logs" / "demo" / "train_scratch.log").exists()  # the rule's own log, written on the node


def test_a_failing_job_is_failed_in_slurm_and_in_snakemake(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule fail:\n'
        '    output: "never.txt"\n'
        '    shell: "echo lgseg-test: deliberate failure >&2; exit 3"\n')
    result, run_id = _snakemake(cluster, tmp_path, tmp_path / "Snakefile", "--jobs", "1", "never.txt")
    log = result.stdout[-3000:] + result.stderr[-5000:]
    assert result.returncode != 0, log
    assert run_id and "Error in rule fail" in result.stderr, log
    assert not (tmp_path / "never.txt").exists()
    jobs = {i: job for i, job in cluster.jobs().items() if job["JobName"] == run_id}
    done = {i: rec for i, rec in cluster.completions().items() if rec["Name"] == run_id}
    assert len(jobs) == 1 and set(done) == set(jobs), log
    (job_id, job), = jobs.items()
    assert job["JobState"] == done[job_id]["JobState"] == "FAILED", job
    assert job["ExitCode"] != "0:0" and job["Partition"] == PARTITION, job
    assert f"SLURM-job '{job_id}' failed" in result.stderr, log
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_fail" / f"{job_id}.log"
    assert "lgseg-test: deliberate failure" in slurm_log.read_text()
