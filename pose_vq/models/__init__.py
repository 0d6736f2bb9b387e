"""The VQ-GAN: generator (encoder, codebook, decoder), discriminator, LPIPS."""
