"""The paper's downstream protocol: datasets, fixed partition, fine-tuning / linear probing, runner."""

from .config import BenchmarkConfig, load_benchmark_config
from .datasets import DATASETS, DownstreamDataset, load_dataset, preprocess
from .inits import InitSpec, build_initial_encoder, imagenet_encoder, parse_init, parse_inits
from .runner import BenchmarkPlan, plan_benchmark, run_benchmark
from .splits import load_or_make_folds, make_folds, stratified_group_folds

__all__ = [
    "DATASETS",
    "BenchmarkConfig",
    "BenchmarkPlan",
    "DownstreamDataset",
    "InitSpec",
    "build_initial_encoder",
    "imagenet_encoder",
    "load_benchmark_config",
    "load_dataset",
    "load_or_make_folds",
    "make_folds",
    "parse_init",
    "parse_inits",
    "plan_benchmark",
    "preprocess",
    "run_benchmark",
    "stratified_group_folds",
]
