"""One run, or one fused group of runs: loading the model and data, corrupting it, training and evaluating it, and
what a run records about its insides. The only package that imports torch (and transformers) at module level;
everything else reaches it through a function-level import (the CLI's `run`, a grid worker, a Ray task)."""
