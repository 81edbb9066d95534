"""healcore: corrupt layers of a pretrained encoder, fine-tune it, and measure how much it heals.

The package is importable without torch: heavy modules (models, corruption, train, run) import torch
themselves, so the dashboard can read results without paying for it.
"""

__version__ = "0.1.0"
