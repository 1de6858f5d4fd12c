"""The one map from config names to torch dtypes (``model.frozen_dtype``, ``run.amp``)."""
from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def frozen_torch_dtype(name: str) -> torch.dtype:
    """``model.frozen_dtype``: ``auto`` is bf16 where CUDA is visible (the frozen ViT and LLM then take half the
    memory, as in LAVIS), fp32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return DTYPES[name]
