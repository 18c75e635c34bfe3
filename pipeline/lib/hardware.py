"""GPU classes for the time and memory estimates, with where each number comes from.

Throughput is modelled, not measured here: LoRA on a frozen base costs about 4N FLOPs per token
(forward 2N, backward through the activations 2N; no weight gradients for the base), and a
well-fed single GPU reaches a model-FLOPs utilization (MFU) of about 35% with Unsloth's kernels on
7-8B models (Unsloth's published Llama 3.1 8B QLoRA runs; torchtune's single-device QLoRA reports).
`make bench` measures the CPU figures; `make gpu-check` and `make gpu-rehearsal` measure them on a GPU.
"""

GPUS = {
    # name: (memory GiB, dense bf16 tensor TFLOP/s from the vendor's datasheet)
    "rtx4090": (24, 165.2),
    "a100-40gb": (40, 312.0),
    "a100-80gb": (80, 312.0),
    "h100": (80, 989.0),
    "h200": (141, 989.0),
}
MFU = 0.35


def tokens_per_second(gpu: str, n_params: float, load_in_4bit: bool) -> float:
    """Expected training tokens/s for LoRA on a model of n_params parameters."""
    _, tflops = GPUS[gpu]
    # Dequantizing NF4 weights on the fly costs roughly 15% (Dettmers et al. 2023, QLoRA, Table 11 timings).
    penalty = 0.85 if load_in_4bit else 1.0
    return tflops * 1e12 * MFU * penalty / (4 * n_params)
