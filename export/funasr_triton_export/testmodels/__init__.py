"""Deterministic random-weight models in their hub layouts, built from their own libraries' classes
(funasr's; pyannote.audio's for the WeSpeaker checkpoint).

They go through exactly the export path real checkpoints use; only their weights are random.
"""


def randomize_batchnorm(model, generator) -> None:
    """Random running statistics and affine parameters in every BatchNorm, so that eval-mode inference
    is not an identity in any of them (a fresh BatchNorm would hide a wrong export of its statistics)."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if module.affine:
                    module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                    module.bias.copy_(0.1 * torch.randn(n, generator=generator))
