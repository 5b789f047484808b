"""A torch DataLoader for real data that keeps the project's guarantee: the batch of step s is f(seed, s).

Decoding video is slow, so worker processes should decode the next steps' clips while the model trains
on this one. A DataLoader may do that without changing *what* is loaded, as long as the clip indices do
not come from the loader: ``StepIndices`` yields, step after step (and micro-batch after micro-batch),
exactly the indices that ``training/batches.py`` draws from the (seed, step) generator for this rank, and
the map-style dataset (``VideoDataset``) turns an index into a clip as a pure function of (seed, index).
So the batch of step s is the same with 0, 2 or 4 workers and any world size, and a resumed run starts
the sampler at its step. With ``batch_size=None`` each worker loads whole batches (one step each), and
the DataLoader hands them back in step order.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Sampler


class StepIndices(Sampler):
    """This rank's clip indices for each micro-batch of steps ``start_step .. max_steps - 1``, in order.

    indices_of_step: step -> the global batch's indices (B,), as the training step draws them.
    slices:          the (virtual rank, virtual world) of each micro-batch of a step on this rank
                     (``distributed.micro_batches``); each takes ``indices[r * B // w : (r + 1) * B // w]``.
    """

    def __init__(self, indices_of_step: Callable[[int], torch.Tensor], start_step: int, max_steps: int,
                 slices: Sequence[Tuple[int, int]]):
        self.indices_of_step, self.start_step, self.max_steps = indices_of_step, start_step, max_steps
        self.slices = list(slices)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * len(self.slices)

    def __iter__(self) -> Iterator[List[int]]:
        for step in range(self.start_step, self.max_steps):
            indices = self.indices_of_step(step)
            B = len(indices)
            for r, w in self.slices:
                yield indices[r * B // w:(r + 1) * B // w].tolist()


class Batches(torch.utils.data.Dataset):
    """A dataset whose item is a whole batch: ``Batches(ds)[indices] == toy_data.get_batch(ds, indices)``,
    plus the indices themselves, so the consumer can check that it got the step it expected."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, indices: List[int]) -> Dict[str, torch.Tensor]:
        import toy_data

        return {**toy_data.get_batch(self.dataset, indices), "indices": torch.tensor(indices, dtype=torch.long)}


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the workers; threads per worker would oversubscribe


def step_loader(dataset, sampler: StepIndices, num_workers: int, pin_memory: bool = False,
                prefetch_factor: int = 2) -> DataLoader:
    """Batches of ``dataset`` for the sampler's steps, decoded by ``num_workers`` processes ahead of use."""
    return DataLoader(Batches(dataset), sampler=sampler, batch_size=None, num_workers=num_workers,
                      pin_memory=pin_memory, prefetch_factor=prefetch_factor if num_workers > 0 else None,
                      worker_init_fn=_one_thread if num_workers > 0 else None)
