"""VGG-16 (with BatchNorm) on CIFAR-10 and CIFAR-100 (paper, Appendix B).

As ResNet-18 (SGD momentum 0.9, lr 0.1 ×0.1 at 80 and 120, wd 1e-4, batch 128, 160 epochs) but
rewinding to iteration 2000; the output layer is not pruned (OpenLTH's cifar_vgg).
"""

import dataclasses

from sdd_jax.config import Config, ModelConfig

from . import resnet18_cifar


def config(dataset: str = "cifar10") -> Config:
    base = resnet18_cifar.config(dataset)
    return dataclasses.replace(
        base,
        name=f"vgg16_{dataset}",
        description=f"VGG-16 / {dataset.upper()}, 20% random labels, IMP rewinding to iteration 2000",
        model=ModelConfig(name="vgg16"),
        pruning=dataclasses.replace(base.pruning, rewind_iteration=2000),
    )
