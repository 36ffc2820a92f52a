"""Batch intelligence: synthetic data, tags, segments, the match matrix, allocation, batch
campaigns and evaluation, as Ray tasks over Parquet (``layout.py`` is the data contract)."""
