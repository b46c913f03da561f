"""Every command and Python API entry on a bfloat16 run, each in a fresh process, on the fused kernels
and on Keras' ops (the tests are command_matrix.py's)."""

import pytest

from command_matrix import *  # noqa: F403 (the tests)
from command_matrix import IMPLEMENTATIONS, train_run


@pytest.fixture(scope="module", params=list(IMPLEMENTATIONS))
def trained(request, tmp_path_factory):
    return train_run("bfloat16", request.param, tmp_path_factory)
