"""Data sets for training and proxy evaluation: synthetic, CIFAR, IDX (MNIST family), image folders
(held in memory, or streamed from disk for training)."""

from evaluators.data.arrays import ImageArrays
from evaluators.data.config import DATASETS, DataConfig
from evaluators.data.dataset import SPLITS, DatasetSplits, load_dataset
from evaluators.data.loader import Augment, BatchLoader
from evaluators.data.pipeline import Batches, TrainingData, load_training_data

__all__ = ["DATASETS", "SPLITS", "Augment", "BatchLoader", "Batches", "DataConfig", "DatasetSplits",
           "ImageArrays", "TrainingData", "load_dataset", "load_training_data"]
