"""A process's peak private memory over a block of work (tests and benchmarks; imports nothing of npo's,
so that a benchmark can measure another checkout's code with it)."""

import ctypes
import os
import threading
import time

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def plain_allocator() -> None:
    """Large blocks from mmap, given back when freed, and the heap trimmed: glibc otherwise raises its mmap
    threshold after large frees, so a long-lived process (a test worker) serves later blocks from a heap
    it keeps, and its resident memory says more about its past than about the block measured."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    libc.malloc_trim(0)


def private_memory() -> int:
    """Resident memory that is this process's own: resident minus file-backed and shared pages."""
    with open("/proc/self/statm") as f:
        resident, shared = (int(x) for x in f.read().split()[1:3])
    return (resident - shared) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory(threading.Thread):
    """`with PeakMemory() as peak: ...`, then `peak.growth`: the most private memory the block held above
    what the process held before it (sampled every 5 ms)."""

    def __init__(self):
        super().__init__(daemon=True)
        plain_allocator()
        self.base = self.peak = private_memory()
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, private_memory())
            time.sleep(0.005)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.join()
        self.peak = max(self.peak, private_memory())

    @property
    def growth(self) -> int:
        return self.peak - self.base
