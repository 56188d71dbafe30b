"""A tiny teacher for the labelling tests: B0's first two stages at width 0.25, 32 px, 10
classes, random weights from a fixed key (the same teacher in every process)."""

import jax


def tiny_teacher():
    from nsjax.models import B0_BLOCKS, config_for, efficientnet_from_config
    from nsjax.train import Teacher

    config = config_for("b0", width=0.25, blocks=B0_BLOCKS[:2], head_channels=64,
                        small_image=True, test_resolution=32)
    model, state = efficientnet_from_config(config, key=jax.random.key(0), num_classes=10)
    return Teacher(model, state)
