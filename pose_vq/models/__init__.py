"""The tokenizer's networks: the VQ-GAN generator (vqgan: encoder, codebook in quantizer,
decoder, from the blocks in layers), the PatchGAN discriminator, and LPIPS-VGG, the frozen
network of the perceptual loss. The downstream models are in pose_vq.downstream."""
