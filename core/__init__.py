"""w2stree engine: environments, trajectory store, trees, MCTS, pairs, training, evaluation.

Nothing in this package imports Streamlit: the dashboard reads through it, never the reverse.
"""

import os

# Offline first: nothing in w2stree may hang on hub retries. Users with network unset it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
