"""Datasets held in memory as raw uint8 tensors, torch-only augmentations and batching.

There is no CPU torchvision here, hence the hand-written IDX/CIFAR readers and vectorised crop/flip.
"""

from dia_ode.data.augment import Augment
from dia_ode.data.batching import global_batches, iterate_batches, normalise, shard_split, to_float
from dia_ode.data.dataset import DataError, Dataset, Split, keeps_data_on
from dia_ode.data.idx import FASHION_MNIST_DIR, read_idx
from dia_ode.data.registry import DATA_ENV, list_datasets, load_dataset, load_test_split
from dia_ode.data.strides import has_standard_strides, with_standard_strides

__all__ = ["Augment", "DATA_ENV", "DataError", "Dataset", "FASHION_MNIST_DIR", "Split", "global_batches", "has_standard_strides",
           "iterate_batches", "keeps_data_on", "list_datasets", "load_dataset", "load_test_split", "normalise", "read_idx",
           "shard_split", "to_float", "with_standard_strides"]
