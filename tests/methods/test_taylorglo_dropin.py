"""The drop-in TaylorGLO object: your own fitness or your own model and DataLoaders, no trainer."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import adaloss
from adaloss.losses import TaylorLoss
from adaloss.methods.search import cma_search
from adaloss.models import create_model

TARGET = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, 1.0])


def _quadratic(loss: TaylorLoss, seed: int) -> float:
    return float(((loss.theta.double().numpy() - TARGET) ** 2).sum())


def _quadratic_on_x(x: np.ndarray, seed: int) -> float:  # the same fitness, written on θ directly
    theta = torch.tensor(x.tolist(), dtype=torch.float32).double().numpy()  # TaylorLoss keeps θ in float32
    return float(((theta - TARGET) ** 2).sum())


def _data(n: int = 96) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


def test_search_sets_the_best_theta_and_matches_cma_search_on_theta() -> None:
    searcher = adaloss.TaylorGLO(_quadratic, popsize=8, generations=12, sigma=1.0, seed=3)
    loss = searcher.search()
    reference = cma_search(_quadratic_on_x, np.zeros(8), sigma=1.0, popsize=8, generations=12, seed=3)
    assert loss is searcher.loss
    assert searcher.result is not None and searcher.result.fitness == reference.fitness
    assert torch.equal(loss.theta, torch.tensor(reference.x.tolist(), dtype=torch.float32))
    assert reference.fitness < _quadratic_on_x(np.zeros(8), 0) / 4  # it did search
    assert searcher.summary()["evaluations"] == 96


def test_training_fitness_is_the_metric_after_partial_training_on_your_loaders() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(80, 1, generator=g)
    train, valid = TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])
    factory = functools.partial(create_model, "mlp", (4,), 1, hidden=[8])
    fitness = adaloss.TrainingFitness(factory, functools.partial(torch.optim.SGD, lr=0.05),
                                      DataLoader(train, batch_size=16), DataLoader(valid, batch_size=8), steps=6)
    t = [0.1, -0.2, 0.3, -1.0, 0.2, 1.0, 0.1, -0.05]
    torch.manual_seed(5)
    value = fitness(TaylorLoss(task="regression", theta=t), 5)
    # independent recomputation: the same init, 6 SGD steps over the batches in order (4 per epoch,
    # cycled) on L = -mean f, the polynomial written out term by term, then the validation MSE
    torch.manual_seed(5)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xs, ys = train.tensors
    for step in range(6):
        i = (step % 4) * 16
        a, b = ys[i:i + 16] - t[0], model(xs[i:i + 16]) - t[1]
        f = (t[2] * b + t[3] / 2 * b**2 + t[4] / 6 * b**3 + t[5] * a * b + t[6] / 2 * a * b**2
             + t[7] / 2 * a**2 * b)
        opt.zero_grad()
        (-f.mean()).backward()
        opt.step()
    with torch.no_grad():
        expected = ((model(valid.tensors[0]) - valid.tensors[1]) ** 2).mean().item()
    assert value == pytest.approx(expected, rel=1e-5)
    assert value != pytest.approx(fitness(TaylorLoss(task="regression", theta=t[:7] + [0.05]), 5), rel=1e-5)


def test_a_higher_is_better_metric_is_negated() -> None:
    train, valid = _data()
    factory = functools.partial(create_model, "mlp", (6,), 3, hidden=[8])
    theta = TaylorLoss(theta=[0.0, 0.0, 1.0, 0.5, 0.0, -0.3, 0.0, 0.0])
    values = {}
    for metric in ("aucpr", adaloss.create_metric("aucpr")):
        torch.manual_seed(5)
        values[str(metric)] = adaloss.TrainingFitness(
            factory, functools.partial(torch.optim.SGD, lr=0.1), DataLoader(train, batch_size=16),
            DataLoader(valid, batch_size=8), steps=6, metric=metric)(theta, 5)
    torch.manual_seed(5)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(6):
        x, y = train[(step % 4) * 16:(step % 4) * 16 + 16]
        opt.zero_grad()
        theta(model(x), y).backward()
        opt.step()
    from sklearn.metrics import average_precision_score

    with torch.no_grad():
        p = model(valid.tensors[0]).softmax(-1).numpy()
    onehot = np.eye(3)[valid.tensors[1].numpy()]
    present = onehot.sum(0) > 0
    expected = average_precision_score(onehot[:, present], p[:, present], average="macro")
    assert all(v == pytest.approx(-expected, rel=1e-5) for v in values.values())


def test_search_over_dataloaders_does_not_depend_on_workers_and_resumes(tmp_path: Path,
                                                                        search_killed_after) -> None:  # type: ignore[no-untyped-def]
    train, valid = _data()
    fitness = adaloss.TrainingFitness(
        functools.partial(create_model, "mlp", (6,), 3, hidden=[8]), functools.partial(torch.optim.SGD, lr=0.1),
        DataLoader(train, batch_size=16, shuffle=True), DataLoader(valid, batch_size=32), steps=8)
    settings = {"popsize": 4, "generations": 3, "seed": 1}
    one = adaloss.TaylorGLO(fitness, **settings)
    one.search()
    two = adaloss.TaylorGLO(fitness, workers=2, **settings)
    two.search()
    assert torch.equal(one.loss.theta, two.loss.theta) and one.result.fitness == two.result.fitness  # type: ignore[union-attr]

    state = tmp_path / "search.json"
    with search_killed_after(2):  # killed after generation 2 of 3
        adaloss.TaylorGLO(fitness, state_path=state, **settings).search()
    resumed = adaloss.TaylorGLO(fitness, state_path=state, **settings)
    resumed.search()
    assert resumed.result is not None and resumed.result.resumed_from == 2
    assert torch.equal(resumed.loss.theta, one.loss.theta)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(TypeError, match="`fitness`"):
        adaloss.TaylorGLO(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`loss`.*TaylorLoss"):
        adaloss.TaylorGLO(_quadratic, loss=torch.nn.MSELoss())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task"):
        adaloss.TaylorGLO(_quadratic, task="ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="popsize"):
        adaloss.TaylorGLO(_quadratic, popsize=1)
    with pytest.raises(TypeError, match="`workers`=2.*picklable"):
        adaloss.TaylorGLO(lambda loss, seed: 0.0, workers=2, generations=1).search()
    with pytest.raises(ValueError, match="steps"):
        adaloss.TrainingFitness(lambda: torch.nn.Linear(2, 2), torch.optim.SGD, [], [], steps=0)
    with pytest.raises(ValueError, match="metric"):
        adaloss.TrainingFitness(lambda: torch.nn.Linear(2, 2), torch.optim.SGD, [], [], metric="accuracy")
