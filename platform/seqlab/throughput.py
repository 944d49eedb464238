"""Peak FLOP/s of accelerators, the denominator of model FLOPs utilisation (`train/mfu`).

MFU = the architecture's training FLOPs per second (its closed-form accounting of the batch, as in
`train/flops_seen`) / the device's peak. The peaks are dense figures, without sparsity, from the vendor
datasheets (NVIDIA's H200, H100, A100, L40S, L4, A10 and V100 datasheets): the starred "with sparsity" figures
there are twice these. A GPU missing here, any CPU (no fixed peak: it depends on the cores, their vector units
and the clock) or a precision without a tensor-core figure gets no MFU unless `trainer.peak_flops` gives one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Peak:
    """One device's dense peaks in FLOP/s; None where it has no tensor cores for that format."""

    bf16: float | None
    fp16: float | None
    tf32: float | None
    fp32: float  # the CUDA cores, without tensor cores


# Matched as whole words of torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB",
# "Tesla V100-SXM2-32GB"), in order: variants before the plain name. Whole words keep "A10" from matching
# "A10G" (AWS's variant, which has no datasheet), "L4" from "L40S", "V100" from "V100S" and "H200" from "GH200".
PEAKS: tuple[tuple[str, Peak], ...] = (
    ("H200 NVL", Peak(835e12, 835e12, 418e12, 60e12)),
    ("H200", Peak(989e12, 989e12, 495e12, 67e12)),  # SXM
    ("H100 NVL", Peak(835e12, 835e12, 418e12, 60e12)),
    ("H100 PCIe", Peak(756e12, 756e12, 378e12, 51e12)),
    ("H100", Peak(989e12, 989e12, 495e12, 67e12)),  # SXM
    ("A100", Peak(312e12, 312e12, 156e12, 19.5e12)),  # SXM and PCIe alike
    ("L40S", Peak(362e12, 362e12, 183e12, 91.6e12)),
    ("L4", Peak(121e12, 121e12, 60e12, 30.3e12)),
    ("A10", Peak(125e12, 125e12, 62.5e12, 31.2e12)),
    ("V100-PCIE", Peak(None, 112e12, None, 14e12)),
    ("V100", Peak(None, 125e12, None, 15.7e12)),  # SXM2: fp16 tensor cores only
)


def peak_flops(device: str, precision: str, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of the GPU named `device` (torch.cuda.get_device_name()) for matmuls at Lightning's
    `precision`, or None when the table has no figure. bf16* and 16* precisions use the bf16 and fp16 tensor
    cores; 32* uses TF32 tensor cores when `tf32` (torch.set_float32_matmul_precision("high" or "medium")),
    else the fp32 peak."""
    peak = next((p for key, p in PEAKS if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", device)), None)
    if peak is None:
        return None
    if precision.startswith("bf16"):
        return peak.bf16
    if precision.startswith("16"):
        return peak.fp16
    if precision.startswith("32"):
        return (peak.tf32 or peak.fp32) if tf32 else peak.fp32
    return None  # 64-bit, transformer-engine: no figure here


def device_peak_flops(device: torch.device, precision: str) -> float | None:
    """peak_flops of the CUDA device `device` at `precision`, with torch's current TF32 setting; None elsewhere."""
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device), precision,
                      tf32=torch.get_float32_matmul_precision() != "highest")
