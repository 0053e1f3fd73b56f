"""Datasets: canonical schemas, adapters for real sources, splits and validation."""
from recsys.data.errors import DataProblem, DataValidationError
from recsys.data.registry import load_dataset, load_path
from recsys.data.schema import MEDIA, Dataset, Medium

__all__ = ["DataProblem", "DataValidationError", "Dataset", "MEDIA", "Medium", "load_dataset", "load_path"]
