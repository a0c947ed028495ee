"""Data layer: named datasets, local files and Hub datasets, validated, with stratified splits."""

from adaptlab.data.dataset import LabeledTexts
from adaptlab.data.files import read_texts
from adaptlab.data.loaders import NAMED_DATASETS, load_data
from adaptlab.data.splits import Splits, split_data

__all__ = ["LabeledTexts", "NAMED_DATASETS", "Splits", "load_data", "read_texts", "split_data"]
