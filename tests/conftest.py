"""Shared test set-up: the repo root on sys.path (for train.py / sample.py) and few threads."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tiny tensors: more threads only add overhead on a 2-core CI machine.
torch.set_num_threads(1)
