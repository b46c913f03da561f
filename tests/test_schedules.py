import pytest

from tf_charrnn.config import OptimizationConfig
from tf_charrnn.training.schedules import describe_length_change, learning_rate


def test_exponential_decays_once_per_epoch_after_decay_after():
    config = OptimizationConfig(learning_rate=1.0, decay_rate=0.5, decay_after=2)
    rates = [learning_rate(config, step=0, epoch=epoch, total_steps=100) for epoch in range(5)]
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.125]


def test_cosine_warms_up_then_decays_to_the_floor():
    config = OptimizationConfig(
        learning_rate=1.0, lr_schedule="cosine", warmup_steps=4, min_learning_rate=0.1
    )
    assert [learning_rate(config, s, 0, 104) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(config, 4, 0, 104) == pytest.approx(1.0)
    assert learning_rate(config, 54, 0, 104) == pytest.approx(0.55)
    assert learning_rate(config, 104, 0, 104) == pytest.approx(0.1)


def test_linear_warms_up_then_decays_in_a_straight_line_to_the_floor():
    config = OptimizationConfig(
        learning_rate=1.0, lr_schedule="linear", warmup_steps=4, min_learning_rate=0.1
    )
    assert [learning_rate(config, s, 0, 104) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(config, 4, 0, 104) == pytest.approx(1.0)
    assert learning_rate(config, 29, 0, 104) == pytest.approx(0.775)
    assert learning_rate(config, 54, 0, 104) == pytest.approx(0.55)
    assert learning_rate(config, 79, 0, 104) == pytest.approx(0.325)
    assert learning_rate(config, 104, 0, 104) == pytest.approx(0.1)


def test_a_changed_run_length_is_described_for_each_schedule():
    cosine = OptimizationConfig(learning_rate=1.0, lr_schedule="cosine", min_learning_rate=0.0)
    assert describe_length_change(cosine, 100, 3, 100, 200) == (
        "The run now ends at step 200, not 100: the cosine schedule decays over the new length, so the "
        "learning rate at step 100 is 0.5 (it was 0)"
    )
    linear = OptimizationConfig(learning_rate=1.0, lr_schedule="linear", min_learning_rate=0.0)
    assert describe_length_change(linear, 100, 3, 100, 200) == (
        "The run now ends at step 200, not 100: the linear schedule decays over the new length, so the "
        "learning rate at step 100 is 0.5 (it was 0)"
    )
    exponential = OptimizationConfig(learning_rate=1.0)
    assert describe_length_change(exponential, 100, 3, 100, 200) == (
        "The run now ends at step 200, not 100: the exponential schedule decays per epoch and goes on "
        "from epoch 4"
    )
