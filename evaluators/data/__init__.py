"""Data sets for training and proxy evaluation: synthetic, CIFAR, IDX (MNIST family), image folders."""

from evaluators.data.arrays import ImageArrays
from evaluators.data.config import DATASETS, DataConfig
from evaluators.data.dataset import SPLITS, DatasetSplits, load_dataset
from evaluators.data.loader import Augment, BatchLoader

__all__ = ["DATASETS", "SPLITS", "Augment", "BatchLoader", "DataConfig", "DatasetSplits",
           "ImageArrays", "load_dataset"]
