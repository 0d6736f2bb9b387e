"""The reference trainer's constructor and step signature around the one-layer model; its
LPIPS comes from the ``lpips`` module the harness provides."""

import lpips
import torch
import wandb  # noqa: F401 (the reference imports it; the harness must provide a stand-in)

CALLS = []


class VQGANTrainer:
    def __init__(self, model_config, vqgan, device="cuda", learning_rate=2.25e-05, beta1=0.5,
                 beta2=0.9, perceptual_loss_factor=1.0, rec_loss_factor=1.0, disc_factor=1.0,
                 disc_start=100, experiment_dir="./experiments", perceptual_model="vgg",
                 save_every=10, model_input="m2d", model_recon="m2d", run=None):
        self.vqgan, self.model_input, self.model_recon = vqgan, model_input, model_recon
        self.perceptual_loss = lpips.LPIPS(net=perceptual_model)
        self.opt = torch.optim.Adam(vqgan.parameters(), lr=learning_rate, betas=(beta1, beta2))

    def step(self, heatmap_2D, heatmap_3D):
        x = heatmap_2D if self.model_input in ("m2d", "2d", "c2d") else heatmap_3D
        y = heatmap_2D if self.model_recon in ("m2d", "2d", "c2d") else heatmap_3D
        if self.model_input == "c2d":
            y = y.max(dim=1, keepdim=True)[0]
        CALLS.append((self.model_input, self.model_recon, tuple(x.shape), tuple(y.shape)))
        out, _, q_loss = self.vqgan(x)
        planes = lambda t: t.reshape(-1, 1, *t.shape[3:]).repeat(1, 3, 1, 1)
        loss = (out - y).abs().mean() + self.perceptual_loss(planes(y), planes(out)).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return out, loss
