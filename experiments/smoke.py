"""A seconds-long smoke run: LeNet-300-100 on 512 embedded MNIST digits, 2 epochs, 3 levels.

Checks an installation end to end (data, training, pruning, checkpoints, results, figure);
its numbers mean nothing.
"""

from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def config() -> Config:
    return Config(
        name="smoke",
        description="LeNet-300-100 / 512 embedded MNIST digits, 2 epochs, 3 levels (installation check)",
        data=DataConfig(name="mnist_embedded", train_size=512, test_size=1000),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=0),
        model=ModelConfig(name="lenet_300_100"),
        optim=OptimConfig(lr=0.1, batch_size=128, epochs=2),
        pruning=PruningConfig(levels=3, fraction=0.2, schedule="lottery", rewind_iteration=0),
        run=RunConfig(seeds=2, eval_batch_size=500),
    )
