"""The smallest BatchNorm ResNet that still has every part of the CIFAR ResNets, for tests whose
subject is BatchNorm, momentum or sharding rather than depth: the stem, one identity BasicBlock and
one strided BasicBlock with a projection shortcut (``ResNet("basic", (1, 1))``). It compiles in a
fraction of a ResNet-18's time, which is most of what those tests spend."""

import jax.numpy as jnp

from sdd_jax.models.resnet import ResNet


def thin_resnet(num_classes: int = 10, width: int = 4, dtype=jnp.float32, stages: int = 2) -> ResNet:
    """``stages`` stages (2: the default) of one BasicBlock each, ``width``, ``2 * width``, ...
    channels, float32 parameters and statistics, compute in ``dtype``. One stage (the stem and one
    identity BasicBlock) is the quickest BatchNorm conv net to compile, for tests whose subject is
    the seed axis or the mesh rather than the blocks."""
    return ResNet("basic", (1,) * stages, num_classes, width, dtype=dtype)
