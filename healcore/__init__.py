"""healcore: corrupt layers of a pretrained encoder, fine-tune it, and measure how much it heals.

Packages, each with one job (docs/ARCHITECTURE.md):
- core/     run configs and their identity, errors, paths, layer selections, model facts, datasets (torch-free);
- store/    the run store on disk: atomic I/O and tolerant readers, run folders, grid records (torch-free);
- engine/   one run or one fused group of runs: the only package that imports torch at module level;
- grids/    grid specs, plans, launching, the local and Ray executors, fusion planning, progress (torch-free);
- results/  tables, cells, claims, Table 1, flags, analyses, comparisons, charts, the report (torch-free).
The dashboard (app.py, pages/) and `healcore status` import only the torch-free packages.
"""

__version__ = "0.1.0"
