"""Fused GPU kernels written in Triton. Importing this package needs no Triton; its modules import it."""
