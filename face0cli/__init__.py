"""face0: put a face into text-to-image diffusion at sample time (Valevski et al., 2023)."""

__version__ = "0.1.0"
