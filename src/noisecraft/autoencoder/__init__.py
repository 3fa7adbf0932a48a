"""The autoencoder of latent diffusion: its training loss (`loss`), the optional perceptual term (`perceptual`) and
the frozen codec a latent diffusion run encodes and decodes with (`codec`: a noisecraft autoencoder run or a
diffusers AutoencoderKL folder)."""
