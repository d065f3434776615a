from __future__ import annotations

import pytest
import torch

from adaloss.training.optim import create_optimizer, create_scheduler


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_builds_the_torch_optimisers_with_settings() -> None:
    sgd = create_optimizer(_params(), "sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 5e-4
    adamw = create_optimizer(_params(), "adamw", lr=1e-3, betas=[0.8, 0.99])
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.99)


def test_multistep_schedule_counts_steps() -> None:
    opt = create_optimizer(_params(), "sgd", lr=1.0)
    sched = create_scheduler(opt, milestones=[2, 4], gamma=0.1)
    assert sched is not None
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert create_scheduler(opt, milestones=[]) is None


def test_invalid_settings_raise_with_names() -> None:
    with pytest.raises(ValueError, match=r"`optimizer` to be one of \['adam', 'adamw', 'sgd'\], but got 'rmsprop'"):
        create_optimizer(_params(), "rmsprop", lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`nesterov=True` needs `momentum` > 0"):
        create_optimizer(_params(), "sgd", lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="apply to optimizer='sgd' only"):
        create_optimizer(_params(), "adam", lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"`lr` to be > 0, but got -0.1"):
        create_optimizer(_params(), "sgd", lr=-0.1)
    with pytest.raises(ValueError, match="increasing positive step numbers"):
        create_scheduler(create_optimizer(_params(), "sgd", lr=0.1), milestones=[10, 5])
