"""ResNet-101 on Tiny-ImageNet at 32×32 px (paper, Appendix B): one-shot pruning.

SGD momentum 0.9, batch 512, lr 0.2 ×0.1 at epochs 100 and 150, wd 1e-4, 200 epochs, with a
5-epoch linear warm-up from a rate of 0 at iteration 0 (``optim.warmup_epochs``; the official
code's ``tinyimagenet_resnet`` defaults, ``warmup_steps='5ep'``, OpenLTH's
``lr·min(1, it/warmup_iters)``), rewinding to iteration 1000 (the paper's Appendix B table and
the official repository's Tiny-ImageNet command, ``--rewinding_steps=1000it``). 3 seeds, as the
paper's CIFAR curves.

The paper prunes this setting one-shot from the dense model (``sdd-jax oneshot``) rather than
iteratively: the preset trains the dense model (``levels=0``, which also saves θk at iteration
1000); then branch to one-shot levels 1 to 16 (densities 0.8^k, down to 2.8%) with
``sdd-jax oneshot RUN_DIR --levels 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16``; each is retrained
from θk like a lottery level. The official command's ``--level=0-16`` is the same set: its level
0 is the dense model itself, this run's level 0. Asymmetric noise is not defined for Tiny-ImageNet.
Tiny-ImageNet must be prepared locally (``data.data_dir`` pointing at the unpacked
tiny-imagenet-200 folder).
"""

from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def config() -> Config:
    return Config(
        name="resnet101_tinyimagenet",
        description="ResNet-101 / Tiny-ImageNet 32px, 20% random labels, dense run + one-shot branches",
        data=DataConfig(name="tiny_imagenet", augment=True),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=0),
        model=ModelConfig(name="resnet101"),
        optim=OptimConfig(
            lr=0.2,
            momentum=0.9,
            weight_decay=1e-4,
            batch_size=512,
            epochs=200,
            milestones=(100, 150),
            gamma=0.1,
            warmup_epochs=5.0,
        ),
        pruning=PruningConfig(levels=0, fraction=0.2, schedule="lottery", rewind_iteration=1000),
        run=RunConfig(seeds=3, seeds_per_chunk=1, eval_batch_size=500, checkpoint_every_epochs=10),
    )
