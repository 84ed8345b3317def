#!/usr/bin/env python3
"""PyTorch + diffusers + peft reference for one ROCM training step, timed.

This is the Python half of the ROCM benchmark; the Rust half is
``cargo run --release --example bench_rocm`` and runs the same workload with the
same flags. ``benches/compare.sh`` runs both, one after the other, and prints
the time and memory ratios.

Workload (one iteration = one ROCM training step)
-------------------------------------------------
* Random weights, seeded with ``torch.manual_seed(0)`` before the models are
  built: a diffusers ``UNet2DConditionModel`` and ``AutoencoderKL`` sized by
  ``--config`` (``tiny``, ``small`` or ``dreamshaper``, see ``CONFIGS``). Batch 1.
  ``dreamshaper`` is the real-size workload for GPUs: LCM Dreamshaper v7's UNet
  (Stable Diffusion 1.5's, with the 256-wide guidance embedding) at latent
  64x64 (512x512 images) and Stable Diffusion's VAE, random weights.
* LoRA via peft (``r=16, lora_alpha=32, init_lora_weights="gaussian"`` on
  ``to_q, to_k, to_v, to_out.0``) added with ``unet.add_adapter``; the base
  UNet and the VAE are frozen, so only the LoRA matrices train.
* K = 8 LCM steps on the Stable Diffusion 1.5 schedule (scaled_linear,
  beta 0.00085 -> 0.012, 1000 train steps), timesteps
  ``[999, 879, 759, 639, 499, 379, 259, 139]``. Each step, written by hand so
  that it stays differentiable::

      eps     = unet(x_k, t_k, cond, timestep_cond=w_emb)
      x0_hat  = (x_k - sqrt(1 - a_k) * eps) / sqrt(a_k)
      f_k     = c_out(t_k) * x0_hat + c_skip(t_k) * x_k
      x_{k+1} = sqrt(a_{k+1}) * f_k + sqrt(1 - a_{k+1}) * z_k

  with ``a_k`` the cumulative alpha at ``t_k``, the LCM boundary condition
  (``sigma_data = 0.5``, ``timestep_scaling = 10``) and fixed noise ``z_k``.
  The gradient flows through all 8 UNet calls. The last step's ``f`` is the
  final latent.
* Guidance: ``timestep_cond`` is the guidance-scale embedding of
  ``w = guidance_scale - 1 = 6.5`` (``guidance_scale = 7.5``), exactly as
  diffusers' ``LatentConsistencyModelPipeline`` builds it.
* KL regulariser at the 7 non-final steps:
  ``a_{k+1} * ||f_theta - f_ref||^2 / (2 (1 - a_{k+1}))`` summed over elements (the KL
  between the Gaussian policies N(sqrt(a_{k+1}) f, 1 - a_{k+1}) of x_{k+1}), where
  ``f_ref`` is the same UNet with its adapters disabled, run under
  ``torch.no_grad()`` on the detached state.
* Reward: the final latent is decoded (``vae.decode(latent / 0.18215)``),
  mapped to ``[0, 1]``, and scored as ``-mean((img - [0.8, 0.2, 0.2])^2)``.
* ``loss = -reward + 0.1 * KL``; backward; AdamW (lr 6e-5, torch defaults
  otherwise) step over the LoRA parameters; zero_grad.

``--checkpointing on`` wraps each step's (LoRA-on) UNet call in
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, so activations
are recomputed per step during backward; ``off`` (the default) is plain
autograd.

Running
-------
::

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -r benches/python/requirements.txt
    /tmp/bench-venv/bin/python benches/python/bench_rocm.py --config tiny
    /tmp/bench-venv/bin/python benches/python/bench_rocm.py --config small \\
        --iters 10 --warmup 2 --checkpointing on --threads 2 --json

Timing: ``--warmup`` untimed iterations, then ``--iters`` iterations each timed
with ``time.perf_counter`` (forward, backward and optimizer step; on CUDA between
two ``torch.cuda.synchronize()``). The median is the headline number;
``s_first_iter`` is the first iteration's time (the cold start). Memory: ``peak_rss_mib`` is the process's own peak
resident set (``ru_maxrss``) read at the end, so it includes the Python
interpreter and the imported libraries: that is what a user of this stack
pays. ``rss_after_import_mib`` is the same counter read after the imports and
the model construction, before the first iteration, for context.

``--device cuda`` runs the workload on the GPU (models, inputs and optimizer
state there; PyTorch's defaults otherwise, recorded in the output:
``cudnn_allow_tf32`` and ``matmul_allow_tf32``). Then ``cuda_max_allocated_mib``
and ``cuda_max_reserved_mib`` are ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` over the whole run (models included), and ``gpu`` the
card's name. ``benches/gpu.sh`` runs it this way next to the Rust example.

Everything is seeded; two runs with the same flags give the same losses
(``loss_first`` is the loss of the very first iteration, warm-up included, so it
does not depend on ``--warmup`` and must agree between checkpointing on and
off).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

# Importing the LCM pipeline module (for its guidance embedding) makes transformers warn about
# image processors this benchmark never uses; keep stderr to real problems.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# The imports below come after that on purpose (hence the E402 waivers).
import diffusers  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img import (  # noqa: E402
    LatentConsistencyModelPipeline,
)
from peft import LoraConfig  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

# ---------------------------------------------------------------------------
# Workload constants (shared with the Rust example `bench_rocm`).
# ---------------------------------------------------------------------------

NUM_STEPS = 8  # K, LCM sampler steps per trajectory
EXPECTED_TIMESTEPS = [999, 879, 759, 639, 499, 379, 259, 139]  # what diffusers gives for K = 8
GUIDANCE_SCALE = 7.5  # the UNet is conditioned on w = 7.5 - 1 = 6.5 (diffusers' LCM convention)
PROMPT_TOKENS = 77  # sequence length of the fixed random conditioning
VAE_SCALING_FACTOR = 0.18215  # Stable Diffusion 1.x latent scaling
TARGET_COLOUR = (0.8, 0.2, 0.2)  # RGB the toy reward pulls the image towards
KL_WEIGHT = 0.1
LEARNING_RATE = 6e-5
LORA_RANK = 16
LORA_ALPHA = 32
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
MODEL_SEED = 0  # torch.manual_seed before the models (and LoRA) are built
DATA_SEED = 1  # generator for x_0, the per-step noise z_k and the conditioning

# Model sizes, in diffusers' own terms. Note that diffusers'
# `attention_head_dim` is (for historical reasons) the number of heads.
CONFIGS = {
    "tiny": {
        "unet": dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
            time_cond_proj_dim=32,
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
        ),
    },
    "dreamshaper": {
        # LCM Dreamshaper v7's unet/config.json (sample_size 96 there; 64 here: 512x512 images).
        "unet": dict(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
            time_cond_proj_dim=256,
        ),
        # Stable Diffusion's VAE (the one LCM Dreamshaper v7 ships).
        "vae": dict(
            in_channels=3,
            out_channels=3,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            sample_size=512,
        ),
    },
    "small": {
        "unet": dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(64, 128, 256),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=256,
            attention_head_dim=8,
            norm_num_groups=32,
            time_cond_proj_dim=64,
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
        ),
    },
}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


class Workload:
    """Models, LoRA, optimizer and the fixed inputs of one benchmark config."""

    def __init__(self, config: str, use_checkpointing: bool, device: str = "cpu"):
        sizes = CONFIGS[config]
        self.use_checkpointing = use_checkpointing
        self.device = torch.device(device)

        torch.manual_seed(MODEL_SEED)
        self.unet = UNet2DConditionModel(**sizes["unet"])
        self.vae = AutoencoderKL(**sizes["vae"])
        self.unet.requires_grad_(False)
        self.vae.requires_grad_(False)
        self.unet.train()  # no dropout/batch-norm here, but be explicit: training mode
        self.vae.eval()

        lora = LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_ALPHA,
            init_lora_weights="gaussian",
            target_modules=LORA_TARGETS,
        )
        self.base_params = sum(p.numel() for p in self.unet.parameters())
        self.unet.add_adapter(lora)  # diffusers' PEFT integration; LoRA params train
        self.unet.to(self.device)
        self.vae.to(self.device)
        self.lora_params = [p for p in self.unet.parameters() if p.requires_grad]
        lora_names = [n for n, p in self.unet.named_parameters() if p.requires_grad]
        assert lora_names and all("lora_" in n for n in lora_names), "only LoRA may train"
        self.trainable_params = sum(p.numel() for p in self.lora_params)
        self.optimizer = torch.optim.AdamW(self.lora_params, lr=LEARNING_RATE)

        # Noise schedule and timesteps: SD 1.5 betas, the LCM scheduler's own timestep spacing.
        scheduler = LCMScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_scaling=10.0,
        )
        scheduler.set_timesteps(NUM_STEPS)
        self.timesteps = [int(t) for t in scheduler.timesteps]
        assert self.timesteps == EXPECTED_TIMESTEPS, f"unexpected LCM timesteps {self.timesteps}"
        alphas_cumprod = scheduler.alphas_cumprod.double()
        self.alpha_bar = [float(alphas_cumprod[t]) for t in self.timesteps]
        self.boundary = [scheduler.get_scalings_for_boundary_condition_discrete(t) for t in self.timesteps]

        # Fixed inputs: initial latent, per-step noise, conditioning, guidance embedding.
        unet_cfg = self.unet.config
        size = unet_cfg.sample_size
        gen = torch.Generator().manual_seed(DATA_SEED)
        self.x0 = torch.randn(1, unet_cfg.in_channels, size, size, generator=gen)
        self.step_noise = [
            torch.randn(1, unet_cfg.in_channels, size, size, generator=gen) for _ in range(NUM_STEPS - 1)
        ]
        self.cond = torch.randn(1, PROMPT_TOKENS, unet_cfg.cross_attention_dim, generator=gen)
        w = torch.tensor([GUIDANCE_SCALE - 1.0])
        # The method does not touch `self`; call it unbound to avoid building a pipeline.
        self.w_emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
            None, w, embedding_dim=unet_cfg.time_cond_proj_dim
        )
        self.target = torch.tensor(TARGET_COLOUR).view(1, 3, 1, 1)
        # Drawn on the host (the same numbers on every device), then moved.
        self.x0, self.cond, self.w_emb, self.target = (
            t.to(self.device) for t in (self.x0, self.cond, self.w_emb, self.target)
        )
        self.step_noise = [z.to(self.device) for z in self.step_noise]

    # -- one sampler step ---------------------------------------------------

    def _eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """UNet noise prediction at timestep `t` (LoRA as currently enabled)."""
        return self.unet(
            x,
            t,
            encoder_hidden_states=self.cond,
            timestep_cond=self.w_emb,
            return_dict=False,
        )[0]

    def _consistency(self, k: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """LCM boundary-condition output f = c_out * x0_hat + c_skip * x at step k."""
        a = self.alpha_bar[k]
        c_skip, c_out = self.boundary[k]
        x0_hat = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        return c_out * x0_hat + c_skip * x

    # -- one training iteration ----------------------------------------------

    def train_step(self) -> float:
        """Sample K steps with gradient, score, backward, AdamW step. Returns the loss."""
        x = self.x0
        kl = torch.zeros((), device=self.device)
        f = None
        for k, t in enumerate(self.timesteps):
            if self.use_checkpointing:
                eps = checkpoint(self._eps, x, t, use_reentrant=False)
            else:
                eps = self._eps(x, t)
            f = self._consistency(k, x, eps)
            if k == NUM_STEPS - 1:
                break

            # Reference: the frozen base model (adapters off) on the same state.
            with torch.no_grad():
                self.unet.disable_adapters()
                x_ref = x.detach()
                f_ref = self._consistency(k, x_ref, self._eps(x_ref, t))
                self.unet.enable_adapters()
            # KL between the step's Gaussian policies N(sqrt(a) f, 1 - a) and N(sqrt(a) f_ref,
            # 1 - a) of x_{k+1}: `a` is the cumulative alpha of the *next* timestep.
            a_next = self.alpha_bar[k + 1]
            kl = kl + a_next / (2.0 * (1.0 - a_next)) * (f - f_ref).pow(2).sum()

            x = math.sqrt(a_next) * f + math.sqrt(1.0 - a_next) * self.step_noise[k]

        image = self.vae.decode(f / VAE_SCALING_FACTOR, return_dict=False)[0]
        image = (image / 2 + 0.5).clamp(0, 1)
        reward = -(image - self.target).pow(2).mean()
        loss = -reward + KL_WEIGHT * kl

        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up iterations (default 2)")
    p.add_argument("--checkpointing", choices=["on", "off"], default="off")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cuda = args.device == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA device", file=sys.stderr)
            return 2
        # Another run of this process (benches/gpu.sh imports this module) must not count here.
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    work = Workload(args.config, use_checkpointing=args.checkpointing == "on", device=args.device)
    rss_after_import = peak_rss_mib()

    losses = []
    warmup_times = []
    times = []
    for i in range(args.warmup + args.iters):
        sync()
        start = time.perf_counter()
        losses.append(work.train_step())
        sync()
        (warmup_times if i < args.warmup else times).append(time.perf_counter() - start)
    if not all(math.isfinite(v) for v in losses):
        print(f"non-finite loss: {losses}", file=sys.stderr)
        return 1

    result = {
        "impl": "pytorch",
        "config": args.config,
        "steps": NUM_STEPS,
        "iters": args.iters,
        "warmup": args.warmup,
        "s_per_iter": statistics.median(times),
        "s_per_iter_min": min(times),
        "s_per_iter_mean": statistics.fmean(times),
        "s_first_iter": (warmup_times + times)[0],
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_import_mib": rss_after_import,
        "backend": args.device,
        "threads": torch.get_num_threads(),
        "checkpointing": args.checkpointing,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "peft": peft.__version__,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "trainable_params": work.trainable_params,
        "base_params": work.base_params,
    }
    if cuda:
        mib = 1024 * 1024
        result.update(
            gpu=torch.cuda.get_device_name(),
            cuda=torch.version.cuda,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cuda_max_allocated_mib=torch.cuda.max_memory_allocated() / mib,
            cuda_max_reserved_mib=torch.cuda.max_memory_reserved() / mib,
        )
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
