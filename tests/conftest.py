from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads() -> None:
    # small ops are faster on one thread, and results do not depend on the machine's core count
    torch.set_num_threads(1)
