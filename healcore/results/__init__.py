"""Reading a store's results: the runs table, cells, claims, Table 1, flags, layer analyses, comparisons, charts and
the report. Torch-free.

The names most callers need are here (`from healcore import results; results.cells(results.load_runs(root))`); each
is defined in one of the modules below, which own them.
"""
from healcore.core.layers import setting_label
from healcore.results.cell_table import (PLATEAU_POINTS, SPEED_SHARE, both_panels, cells, clean_run_ids,
                                         healing_speed, line_names, plateau, reinit_only, scored, scored_runs)
from healcore.results.keys import CELL_KEYS, CORRUPTION_KEYS, PLACEMENT_KEYS, as_text, cell_id, line_keys, text_of
from healcore.results.paper_claims import CLAIMS, REFERENCE_FAILED, bottom_vs_top_tests, claims
from healcore.results.paper_tables import TABLE1_NOTE, export_table1, note, optimizer_name, recipe_caption, table1
from healcore.results.runs_table import (RUN_COLUMNS, SPLIT_METRICS, dataset_labels, layers_text, load_epochs,
                                         load_runs)

__all__ = ["setting_label", "PLATEAU_POINTS", "SPEED_SHARE", "healing_speed", "both_panels", "cells", "clean_run_ids", "line_names", "plateau",
           "reinit_only", "scored", "scored_runs", "CELL_KEYS", "CORRUPTION_KEYS", "PLACEMENT_KEYS", "as_text",
           "cell_id", "line_keys", "text_of", "CLAIMS", "REFERENCE_FAILED", "bottom_vs_top_tests", "claims",
           "TABLE1_NOTE", "export_table1", "note", "optimizer_name", "recipe_caption", "table1", "RUN_COLUMNS", "SPLIT_METRICS",
           "dataset_labels", "layers_text", "load_epochs", "load_runs"]
