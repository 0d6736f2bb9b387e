"""A one-convolution model with the reference VQGAN's constructor and encode signature."""

import torch
from torch import nn


class VQGAN(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, discriminator_channels=3, img_size=256,
                 latent_channels=256, latent_size=16, intermediate_channels=(128,),
                 num_residual_blocks_encoder=2, num_residual_blocks_decoder=3, upsample_layers=3,
                 downsample_layers=3, temporal_downsample_layers=3, temporal_upsample_layers=3,
                 dropout=0.0, attention_resolution=(16,), num_codebook_vectors=1024,
                 reduce_temporal=False, **kwargs):
        super().__init__()
        self.received = dict(locals())
        self.encoder = nn.Conv3d(in_channels, latent_channels, 3, padding=1)
        self.decoder = nn.Conv3d(latent_channels, out_channels, 3, padding=1)
        self.codebook = nn.Embedding(num_codebook_vectors, latent_channels)

    def encode(self, x):
        z = self.encoder(x)
        flat = z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1])
        indices = torch.cdist(flat, self.codebook.weight).argmin(1)
        return self.codebook(indices), indices, torch.zeros(())

    def forward(self, x):
        return self.decoder(self.encoder(x)), None, torch.zeros(())
