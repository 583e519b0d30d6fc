"""refine.available_bytes reads what the kernel can give (MemAvailable), not only the free pages."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from lama_multiscale_refine.refine.memory import _meminfo_available, available_bytes


def test_meminfo_available_is_parsed(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:          512000 kB\nMemAvailable:   20000000 kB\n")
    assert _meminfo_available(str(meminfo)) == 20000000 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:          512000 kB\n")  # kernels before 3.14
    assert _meminfo_available(str(meminfo)) is None
    assert _meminfo_available(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/meminfo is Linux only")
def test_cpu_memory_counts_the_page_cache():
    free_pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # MemFree: what was read before
    available = available_bytes(torch.device("cpu"))
    assert available == pytest.approx(_meminfo_available(), rel=0.05)
    assert available >= 0.9 * free_pages  # MemAvailable includes MemFree (allow for the time between reads)
