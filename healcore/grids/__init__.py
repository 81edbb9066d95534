"""Grids of runs, torch-free: specs and presets (spec), a grid against a store (plan), launching and cancelling
(launch), how many runs at once (slots), the local executor's persistent workers (local), Ray clusters
(ray_cluster), which runs may train fused (fusion), and live progress (progress)."""
