"""The reference: a training loop and a sampler built the way diffusers' examples build them.

Mirrors `examples/unconditional_image_generation/train_unconditional.py` (diffusers 0.3x): a `UNet2DModel`,
images decoded and transformed one at a time by torchvision transforms in a `DataLoader` (the script's default
`--dataloader_num_workers 0`), `DDPMScheduler.add_noise` on uniform timesteps, epsilon MSE, AdamW, gradient
clipping at 1.0, an lr schedule from `diffusers.optimization.get_scheduler`, `EMAModel`, and `loss.item()`
logged every step. Precision is the script's default `--mixed_precision no` (fp32) unless `precision="bf16"`
(what accelerate does for `--mixed_precision bf16`: autocast around the forward pass).

Two departures, both so that it is compared on equal terms with noisecraft's digits preset:
  * class labels (`num_class_embeds`, the extra index is the null class, dropped at the same 10% rate) so that
    the same conditional-accuracy judge applies to both;
  * optimiser hyper-parameters (lr, warm-up, constant schedule, EMA decay) taken from the noisecraft config
    passed in, not the script's 1e-4 / 500-step warm-up / cosine, which suit 100k-step runs, not minutes.

Sampling is diffusers' `DDIMScheduler` loop (`set_timesteps`, then `scheduler.step` per network call).
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F


def reference_unet(model, image_size: int = 28, channels: int = 1, num_classes: int = 10):
    """A UNet2DModel with the widths of noisecraft's `model` config (`block_out_channels` = unet.base_channels x
    unet.channel_mult, `layers_per_block` = unet.num_res_blocks), attention at the lowest level and in the middle. With
    `model.patch_size` p > 1 it runs on the space-to-depth image (C p^2 channels at image_size / p), between
    pixel_unshuffle and pixel_shuffle, as noisecraft's U-Net does: the same network, built the diffusers way."""
    from diffusers import UNet2DModel

    u = model.unet  # the U-Net's own settings
    p, levels = model.patch_size, len(u.channel_mult)
    unet = UNet2DModel(
        sample_size=image_size // p, in_channels=channels * p * p, out_channels=channels * p * p,
        layers_per_block=u.num_res_blocks, block_out_channels=tuple(u.base_channels * m for m in u.channel_mult),
        down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        attention_head_dim=model.head_channels, class_embed_type=None,
        num_class_embeds=num_classes + 1 if num_classes else None,
    )
    return unet if p == 1 else _Patched(unet, p)


class _Patched(torch.nn.Module):
    """A UNet2DModel on pixel_unshuffle(x, p); returns what it returns, with `.sample` shuffled back."""

    def __init__(self, unet, p: int):
        super().__init__()
        self.unet, self.p, self.config = unet, p, unet.config

    def forward(self, x, timesteps, class_labels=None):
        out = self.unet(F.pixel_unshuffle(x, self.p), timesteps, class_labels=class_labels)
        out.sample = F.pixel_shuffle(out.sample, self.p)
        return out


class _PILDigits(torch.utils.data.Dataset):
    """The dataset as the script sees it: PIL images, transformed one at a time on access."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor | None, hflip: bool):
        from PIL import Image
        from torchvision import transforms

        mode = "L" if images_uint8.shape[1] == 1 else "RGB"
        arrays = images_uint8.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a[..., 0] if mode == "L" else a, mode) for a in arrays]
        self.labels = labels
        size = images_uint8.shape[-1]
        c = images_uint8.shape[1]
        self.transform = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(size),
            transforms.RandomHorizontalFlip() if hflip else transforms.Lambda(lambda x: x),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * c, [0.5] * c),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        y = int(self.labels[i]) if self.labels is not None else 0
        return {"input": self.transform(self.images[i]), "label": y}


class ReferenceTrainer:
    """diffusers-style training; `run(steps)` trains that many optimizer steps and returns their seconds."""

    def __init__(self, data, cfg, device: torch.device, precision: str = "fp32", seed: int = 0):
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(seed)
        self.device, self.cfg = device, cfg
        self.num_classes = data.num_classes
        self.model = reference_unet(cfg.model, data.image_size, data.channels, self.num_classes).to(device)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        tc = cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=(0.95, 0.999),
                                           weight_decay=1e-6, eps=1e-8)
        self.lr_scheduler = get_scheduler("constant_with_warmup", optimizer=self.optimizer,
                                          num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps)
        self.ema = EMAModel(self.model.parameters(), decay=tc.ema_decay, use_ema_warmup=True, inv_gamma=1.0,
                            power=3 / 4, model_cls=type(self.model), model_config=self.model.config)
        self.ema.to(device)
        self.dataset = _PILDigits(data.images, data.labels, cfg.data.hflip)
        g = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=tc.batch_size, shuffle=True,
                                                  num_workers=0, drop_last=True, generator=g)
        self._it = iter(self.loader)
        self.precision = precision
        self.global_step = 0
        self.last_loss = float("nan")

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _next_batch(self):
        try:
            return next(self._it)
        except StopIteration:  # a new epoch
            self._it = iter(self.loader)
            return next(self._it)

    def run(self, steps: int) -> float:
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            batch = self._next_batch()
            clean_images = batch["input"].to(self.device)
            labels = batch["label"].to(self.device) if self.num_classes else None
            if labels is not None:  # label dropout for classifier-free guidance, as in noisecraft
                drop = torch.rand(labels.shape, device=self.device) < self.cfg.train.label_dropout
                labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
            noise = torch.randn(clean_images.shape, device=self.device)
            bsz = clean_images.shape[0]
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                                      device=self.device).long()
            noisy_images = self.noise_scheduler.add_noise(clean_images, noise, timesteps)
            with self._autocast():
                model_output = self.model(noisy_images, timesteps, class_labels=labels).sample
            loss = F.mse_loss(model_output.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
            self.ema.step(self.model.parameters())
            self.global_step += 1
            self.last_loss = loss.detach().item()  # the script logs this every step (a host sync)
        return time.perf_counter() - t0

    def ema_model(self):
        """A copy of the model holding the EMA weights (for sampling)."""
        import copy

        model = copy.deepcopy(self.model).eval()
        self.ema.copy_to(model.parameters())
        return model


@torch.no_grad()
def ddim_sample(model, n: int, labels: torch.Tensor | None, num_classes: int, shape, steps: int = 20,
                guidance: float = 0.0, seed: int = 0, device="cpu", precision: str = "fp32") -> torch.Tensor:
    """diffusers' DDIM loop (eta 0), with classifier-free guidance (1 + w) eps_c - w eps_null as one batched call
    when `guidance` != 0; returns uint8 (n, C, H, W)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scheduler.set_timesteps(steps)
    g = torch.Generator(device).manual_seed(seed)
    x = torch.randn((n, *shape), generator=g, device=device)
    use_cfg = labels is not None and guidance != 0
    labels = labels.to(device) if labels is not None else None
    ctx = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16" \
        else contextlib.nullcontext()
    for t in scheduler.timesteps:
        with ctx:
            if use_cfg:
                y = torch.cat([labels, torch.full_like(labels, num_classes)])
                eps_c, eps_u = model(torch.cat([x, x]), t, class_labels=y).sample.float().chunk(2)
                eps = (1 + guidance) * eps_c - guidance * eps_u
            else:
                eps = model(x, t, class_labels=labels).sample.float()
        x = scheduler.step(eps, t, x).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
