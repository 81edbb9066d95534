"""The foundations every other package builds on, torch-free: a run's config and identity (config), user-facing
errors (errors), allowed and output paths (paths), layer selections (layers), what is known about a model without
loading it (model_facts), datasets (data), and signal handling (stopping)."""
