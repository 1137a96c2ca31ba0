"""ResNet-101 on Tiny-ImageNet at 32×32 px (paper, Appendix B): one-shot pruning.

SGD momentum 0.9, batch 512, lr 0.2 ×0.1 at epochs 100 and 150, wd 1e-4, 200 epochs. The paper
prunes this setting one-shot from the dense model (``sdd-jax oneshot``) rather than iteratively:
the preset trains the dense model (``levels=0``); then branch to the paper's one-shot levels with
``sdd-jax oneshot RUN_DIR --levels 2,4,6,8,10,12,14,16,18,20`` (densities 0.8^k).
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
        optim=OptimConfig(lr=0.2, momentum=0.9, weight_decay=1e-4, batch_size=512, epochs=200,
                          milestones=(100, 150), gamma=0.1),
        pruning=PruningConfig(levels=0, fraction=0.2, schedule="lottery", rewind_iteration=0),
        run=RunConfig(seeds=1, seeds_per_chunk=1, eval_batch_size=500, checkpoint_every_epochs=10),
    )
