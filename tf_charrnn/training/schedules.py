"""Learning-rate schedules: char-rnn's per-epoch exponential decay, or linear warmup then a cosine or a
linear decay to the floor."""

import math

from tf_charrnn.config import OptimizationConfig


def learning_rate(config: OptimizationConfig, step: int, epoch: int, total_steps: int) -> float:
    """The learning rate for a training step.

    Args:
      config: OptimizationConfig.
      step: 0-based index of the step about to run.
      epoch: 0-based epoch that step belongs to.
      total_steps: steps in the whole run (cosine and linear decay over them).

    Returns:
      float learning rate.
    """
    if config.lr_schedule == "exponential":
        return config.learning_rate * config.decay_rate ** max(0, epoch + 1 - config.decay_after)
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    decay_steps = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    if config.lr_schedule == "linear":
        remaining = 1.0 - progress
    else:
        remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_learning_rate + (config.learning_rate - config.min_learning_rate) * remaining


def describe_length_change(
    config: OptimizationConfig, step: int, epoch: int, old_total_steps: int, total_steps: int
) -> str:
    """What a run resumed at `step` with another length does to its learning rate, in a sentence.

    Args:
      config: OptimizationConfig.
      step, epoch: where the run resumes (0-based).
      old_total_steps, total_steps: the run's length before and now.
    """
    change = f"The run now ends at step {total_steps}, not {old_total_steps}"
    if config.lr_schedule == "exponential":
        return f"{change}: the exponential schedule decays per epoch and goes on from epoch {epoch + 1}"
    before = learning_rate(config, step, epoch, old_total_steps)
    after = learning_rate(config, step, epoch, total_steps)
    return (
        f"{change}: the {config.lr_schedule} schedule decays over the new length, so the learning rate at "
        f"step {step} is {after:.3g} (it was {before:.3g})"
    )
