"""The laptop-sized quickstart: sparse double descent on real MNIST digits in minutes.

LeNet-300-100 on the real-MNIST subset shipped inside the package (no download), 20% random
labels, lottery rewinding to iteration 0, plain SGD lr 0.1, 34 levels (down to 0.05% of the
prunable weights, so that the collapse shows), 2 seeds vmapped. The subset
size and epoch count are chosen so the three phases (test accuracy dips while the sparse net
still memorises the noise, rises above the dense value once it cannot, then collapses) show up
within five minutes on a 2-core CPU.
"""

from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def config() -> Config:
    return Config(
        name="quickstart",
        description="LeNet-300-100 / embedded MNIST subset, 20% random labels, 34 levels, ~3 min on a 2-core CPU",
        data=DataConfig(name="mnist_embedded", train_size=4000, subset_mode="first"),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=0),
        model=ModelConfig(name="lenet_300_100"),
        optim=OptimConfig(lr=0.1, momentum=0.0, batch_size=128, epochs=60),
        pruning=PruningConfig(levels=34, fraction=0.2, schedule="lottery", rewind_iteration=0),
        run=RunConfig(seeds=2, eval_every_epochs=5),
    )
