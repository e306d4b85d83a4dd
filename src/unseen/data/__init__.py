"""Datasets and partitioners: ``load(name)`` gives train/test arrays, ``partition`` splits them across clients."""

from unseen.data.datasets import DATASETS, Dataset, Split, list_datasets, load, load_table
from unseen.data.partition import label_skew, partition

__all__ = ["DATASETS", "Dataset", "Split", "label_skew", "list_datasets", "load", "load_table", "partition"]
