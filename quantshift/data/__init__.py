"""Market data: the aligned ``Bars`` container, loading from one spec string, and validation.

Sources are CSV/Parquet files, the builtin ``sp500``/``nasdaq`` data sets and seeded synthetic data.
"""

from quantshift.data.bars import FIELDS, Bars
from quantshift.data.catalog import describe, import_file, list_sources
from quantshift.data.sources import data_dir, load_bars, write_parquet
from quantshift.data.synthetic import synthetic_bars
from quantshift.data.validate import validate_bars

__all__ = [
    "FIELDS",
    "Bars",
    "data_dir",
    "describe",
    "import_file",
    "list_sources",
    "load_bars",
    "synthetic_bars",
    "validate_bars",
    "write_parquet",
]
