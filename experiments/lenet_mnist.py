"""LeNet-300-100 on MNIST (paper, Appendix B).

SGD lr 0.1 without momentum, batch 128, 200 epochs, rewind to iteration 0 (lottery ticket
rewinding to the initialisation), output layer not pruned, 20% of the remaining weights pruned
per level for 24 levels (sparsity up to 1-0.8^24 = 99.53%), 20% random labels. 5 seeds: the
paper's LeNet curves average five runs.
"""

from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def config() -> Config:
    return Config(
        name="lenet_mnist",
        description="LeNet-300-100 / MNIST, 20% random labels, IMP rewinding to iteration 0",
        data=DataConfig(name="mnist", source="auto"),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=0),
        model=ModelConfig(name="lenet_300_100"),
        optim=OptimConfig(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=128, epochs=200),
        pruning=PruningConfig(
            levels=24, fraction=0.2, schedule="lottery", rewind_iteration=0, finetune_lr=0.1, redense_lr=0.1
        ),
        run=RunConfig(seeds=5, eval_every_epochs=1, checkpoint_every_epochs=20),
    )
