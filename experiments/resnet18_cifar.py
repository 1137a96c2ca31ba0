"""ResNet-18 on CIFAR-10 and CIFAR-100 (paper, Appendix B).

SGD momentum 0.9, lr 0.1 ×0.1 at epochs 80 and 120, weight decay 1e-4, batch 128, 160 epochs,
pad-4 crop + flip augmentation, rewind to iteration 1000, classifier pruned too (OpenLTH's
CIFAR ResNets prune every conv and the fc layer), 20% random labels. 3 seeds: the paper's CIFAR
curves average three runs.
"""

from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def config(dataset: str = "cifar10") -> Config:
    return Config(
        name=f"resnet18_{dataset}",
        description=f"ResNet-18 / {dataset.upper()}, 20% random labels, IMP rewinding to iteration 1000",
        data=DataConfig(name=dataset, augment=True),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=0),
        model=ModelConfig(name="resnet18"),
        optim=OptimConfig(
            lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=160, milestones=(80, 120), gamma=0.1
        ),
        pruning=PruningConfig(
            levels=24, fraction=0.2, schedule="lottery", rewind_iteration=1000, finetune_lr=0.001, redense_lr=0.001
        ),
        run=RunConfig(seeds=3, eval_batch_size=1000, checkpoint_every_epochs=10),
    )
