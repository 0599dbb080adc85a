"""Where every data product lives: the one owner of the paths the rules, the engine, the CLI, the DVC generator
and the tests use. Everything derives from three config keys (`data_dir`, `runs_dir`, `results_dir`) and the
dataset name. Imports nothing heavy: the workflow builds its DAG from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
# files of one run folder
RUN_SPEC = "run.json"  # the resolved run specification the training reads (written by the run_spec rule)
LAST, BEST = "last.pt", "best.pt"  # resumable checkpoint; checkpoint kept by the objective's monitor
SUMMARY = "train_summary.json"  # written when training has finished: the training rule's declared output
METRICS = "metrics.json"
LIVE = "dvclive"
RUN_FILES = (RUN_SPEC, LAST, BEST, SUMMARY, METRICS, LIVE, "config.json")  # what a run folder may hold
# (config.json: the run settings earlier lgseg versions wrote there)


def split_list(processed: str | Path, split: str) -> Path:
    """The scene list of one split of a processed store."""
    return Path(processed) / "splits" / f"{split}.txt"


def split_dir(processed: str | Path, split: str) -> Path:
    """Folder of the processed scenes of one split."""
    return Path(processed) / split


def ratio_tag(ratio: float | str) -> str:
    """0.05 -> "0.05", 1.0 -> "1": how an annotation ratio appears in file names (a string, such as a Snakemake
    wildcard "{ratio}", stays as it is)."""
    return ratio if isinstance(ratio, str) else f"{ratio:g}"


@dataclass(frozen=True)
class Layout:
    """Paths of one dataset's products. `Layout.of(config)` for a validated config."""

    data_dir: str
    runs_dir: str
    results_dir: str
    dataset: str

    @classmethod
    def of(cls, config: dict) -> "Layout":
        return cls(config["data_dir"], config["runs_dir"], config["results_dir"], config["dataset"]["name"])

    # raw and processed data
    @property
    def demo_raw(self) -> Path:
        return Path(self.data_dir) / "raw" / self.dataset

    @property
    def download_manifest(self) -> Path:
        return Path(self.data_dir) / "raw" / f"{self.dataset}.download.json"

    @property
    def processed(self) -> Path:
        return Path(self.data_dir) / "processed" / self.dataset

    @property
    def raw_manifest(self) -> Path:
        return self.processed / "raw_manifest.json"

    @property
    def label_map(self) -> Path:
        return self.processed / "label_map.tsv"

    def shard_manifest(self, shard: str) -> Path:
        return self.processed / "shards" / f"shard_{shard}.json"

    def split_list(self, split: str) -> Path:
        return split_list(self.processed, split)

    def split_dir(self, split: str) -> Path:
        return split_dir(self.processed, split)

    def mask(self, ratio: float | str) -> Path:
        """Limited-annotation mask of one ratio (< 1)."""
        return self.processed / "masks" / f"annotated_{ratio_tag(ratio)}.npz"

    @property
    def class_stats(self) -> Path:
        return self.processed / "class_stats.csv"

    def instance_bank(self, ratio: float | str = 1.0) -> Path:
        """Instance bank built from all annotations (ratio 1) or from those of a limited-annotation mask."""
        return self.processed / f"instance_bank_{ratio_tag(ratio)}.npz"

    def text_anchors(self, encoder: str) -> Path:
        return Path(self.data_dir) / "text" / f"{encoder}.npz"

    def text_anchors_figure(self, encoder: str) -> Path:
        """The anchors' similarity heat map."""
        return self.figure(f"text_anchors_{encoder}.png")

    # runs
    def run_dir(self, kind: str, name: str) -> Path:
        """runs/<dataset>/<experiment>, or runs/<dataset>/pretrain/<name> for a pre-training."""
        root = Path(self.runs_dir) / self.dataset
        return root / "pretrain" / name if kind == "pretraining" else root / name

    def run_file(self, kind: str, name: str, filename: str) -> Path:
        return self.run_dir(kind, name) / filename

    def run_spec(self, kind: str, name: str) -> Path:
        """The run specification the workflow writes for a run: runs/<dataset>/specs/<kind>.<name>.json."""
        return Path(self.runs_dir) / self.dataset / "specs" / f"{kind}.{name}.json"

    # results and logs
    def result(self, name: str) -> Path:
        return Path(self.results_dir) / name

    def figure(self, name: str) -> Path:
        return Path(self.results_dir) / "figures" / name

    @property
    def logs(self) -> Path:
        return Path("logs") / self.dataset
