"""Networks and how they learn: the inputs each network reads, the models, the training loop,
trained networks on disk, compression, distillation, device and precision."""
