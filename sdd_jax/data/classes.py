"""Class tables that label noise needs: the asymmetric flips and the CIFAR-100 superclasses.

The CIFAR-100 table is written by name, as on the data set's page
(https://www.cs.toronto.edu/~kriz/cifar.html): each of the 20 superclasses ("coarse labels")
holds five classes ("fine labels"). Fine and coarse indices are the alphabetical positions of
the names, which is how the ``cifar-100-python`` files and tfds number them.
"""

from __future__ import annotations

import numpy as np

# Asymmetric ("class-conditional") flips, source class -> target class.
# MNIST: as the official code (after CDR, Xia et al.): 2->7, 3->8, 5<->6.
MNIST_FLIPS = {2: 7, 3: 8, 5: 6, 6: 5}
# CIFAR-10: as the official code (after ELR, Liu et al.): truck->automobile, bird->airplane,
# cat<->dog, deer->horse.
CIFAR10_FLIPS = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}

CIFAR100_FINE_NAMES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)

CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}


def cifar100_coarse_of_fine() -> np.ndarray:
    """``(100,)`` int array: the superclass index of every fine class."""
    coarse_names = sorted(CIFAR100_SUPERCLASSES)
    index = {name: i for i, name in enumerate(CIFAR100_FINE_NAMES)}
    table = np.full(100, -1, dtype=np.int64)
    for c, coarse in enumerate(coarse_names):
        for fine in CIFAR100_SUPERCLASSES[coarse]:
            table[index[fine]] = c
    return table


def cifar100_superclass_flips() -> dict[int, int]:
    """Each fine class -> the next fine class (by index) of its superclass, cyclically."""
    coarse = cifar100_coarse_of_fine()
    flips = {}
    for c in range(20):
        members = np.flatnonzero(coarse == c)
        for a, b in zip(members, np.roll(members, -1)):
            flips[int(a)] = int(b)
    return flips


def cifar100_block_flips() -> dict[int, int]:
    """The official code's CIFAR-100 "superclasses": blocks of five consecutive indices,
    each class -> the next in its block, cyclically (4 -> 0, 9 -> 5, ...)."""
    return {i: (i // 5) * 5 + (i % 5 + 1) % 5 for i in range(100)}
