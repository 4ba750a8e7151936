"""I/O at the edges: results files with provenance."""
from imdad_jax.io.results import (atomic_write, load_history, method_table, per_class_table, provenance,
                                  write_results)

__all__ = ["atomic_write", "load_history", "method_table", "per_class_table", "provenance", "write_results"]
