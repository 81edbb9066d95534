"""The run store on disk, torch-free: writing and reading files so that nothing is ever half-written (io), one
folder per run with its status, metrics and artefacts (runs), and the records of the grids started on it (grids)."""
