"""Multi-host validation: each process predicts its own share of the images (the dataset is sharded by
process), and the metrics need all of them, so the per-process results are gathered to every process
before scoring. Only process 0 prints and writes files (validator.py).

The helpers are the package's one set for several processes (nasjax/utils/distributed.py); this module
keeps their old place.
"""
from __future__ import annotations

from nasjax.utils.distributed import allgather, is_primary, process_count

__all__ = ["allgather", "is_primary", "process_count"]
