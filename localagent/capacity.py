"""GPU slots on this machine: which device indices each replica holds (exported as CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations


class GpuSlots:
    """A fixed number of slots per GPU type; replicas hold specific indices so they never share a device."""

    def __init__(self, total: dict[str, int]) -> None:
        self.total = dict(total)
        self._used: dict[str, set[int]] = {gpu_type: set() for gpu_type in total}

    def free(self, gpu_type: str) -> int:
        return self.total.get(gpu_type, 0) - len(self._used.get(gpu_type, set()))

    def allocate(self, gpu_type: str, count: int) -> list[int] | None:
        """The lowest free indices, or None when fewer than ``count`` are free."""
        if count <= 0:
            return []
        if self.free(gpu_type) < count:
            return None
        used = self._used[gpu_type]
        picked = [i for i in range(self.total[gpu_type]) if i not in used][:count]
        used.update(picked)
        return picked

    def claim(self, gpu_type: str, indices: list[int]) -> bool:
        """Take exactly ``indices`` (an adopted replica's); False when any is taken or out of range."""
        used = self._used.get(gpu_type)
        if used is None or any(i in used or i >= self.total[gpu_type] for i in indices):
            return not indices
        used.update(indices)
        return True

    def release(self, gpu_type: str, indices: list[int]) -> None:
        self._used.get(gpu_type, set()).difference_update(indices)

    def shortage_message(self, gpu_type: str, count: int) -> str:
        return f"local backend has {max(0, self.free(gpu_type))} free {gpu_type} slots (needs {count})"
