"""What this CPU can compute fast: its model name and the instruction sets the runtime choice looks at.

Read from ``/proc/cpuinfo`` (Linux; the kernel lists only what the CPU *and* the OS support, so AMX shows
only where the kernel enables its tile state). Elsewhere the flags are unknown and the plain fp32 path is
used. ``MERCLIP_CPU_FLAGS`` (space-separated /proc/cpuinfo names) replaces the flags: what another CPU
would get (``MERCLIP_CPU_FLAGS="avx2" merclip doctor``), and the test suite runs as on a plain AVX2 CPU.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# The flags that decide the precision, fastest first (the names /proc/cpuinfo uses).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # AMX tiles (Sapphire Rapids+), AVX-512 BF16 (Cooper Lake, Zen 4+)
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # VNNI: int8 dot products (Cascade Lake+, Alder Lake+)
SHOWN_FLAGS = (*BF16_FLAGS, *INT8_FLAGS, "avx512f", "avx2")
FLAGS_ENV = "MERCLIP_CPU_FLAGS"


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        """bf16 matrix products in hardware (else a bf16 request would be emulated in fp32, or refused)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def int8(self) -> bool:
        return any(f in self.flags for f in INT8_FLAGS)

    @property
    def isa(self) -> list[str]:
        """The instruction sets that matter here, as /proc/cpuinfo names them (fastest first)."""
        return [f for f in SHOWN_FLAGS if f in self.flags]

    @property
    def bf16_unit(self) -> str:
        """Which unit does bf16 here, in words: "AMX", "AVX-512-BF16" or ""."""
        return "AMX" if "amx_bf16" in self.flags else "AVX-512-BF16" if "avx512_bf16" in self.flags else ""

    def describe(self) -> str:
        return f"{self.model} ({' '.join(self.isa) or 'no AVX2/AVX-512/AMX'})"


def parse_cpuinfo(text: str) -> CpuInfo:
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU", flags)


def this_cpu() -> CpuInfo:
    cpu = _read_cpu()
    faked = os.environ.get(FLAGS_ENV)
    return cpu if faked is None else CpuInfo(cpu.model, frozenset(faked.split()))


@functools.cache
def _read_cpu() -> CpuInfo:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux: the flags are unknown, so nothing faster than fp32 is assumed
        return CpuInfo(platform.processor() or platform.machine() or "unknown CPU", frozenset())
