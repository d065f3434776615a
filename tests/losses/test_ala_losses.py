"""ALA's parametric losses: values against hand computations, float64 gradients, bounds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaloss.losses.ala import (
    ClassPairLoss,
    PairDistanceLoss,
    ParametricLoss,
    apply_parameter_delta,
    class_pair_loss,
    pair_distance_histograms,
    pair_distance_loss,
    sigmoid_gradient_ratio,
)


def test_log_prob_form_at_identity_is_cross_entropy() -> None:
    torch.manual_seed(0)
    z, y = torch.randn(16, 7), torch.randint(0, 7, (16,))
    loss = ClassPairLoss(7, form="log_prob")
    torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y))


def test_sigmoid_form_hand_value() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    loss = ClassPairLoss(3, form="sigmoid").double()
    # at Φ = I: −σ(log p_y) = −p_y / (1 + p_y)
    p = z.softmax(-1)[torch.arange(2), y]
    torch.testing.assert_close(loss(z, y), (-p / (1 + p)).mean())
    # a general Φ: −σ(Σ_j Φ_yj log p_j), written out
    loss.set_parameter_vector(torch.tensor([0.3, -0.5, 0.2], dtype=torch.float64))  # (0,1), (0,2), (1,2)
    phi = torch.tensor([[1.0, 0.3, -0.5], [0.3, 1.0, 0.2], [-0.5, 0.2, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.phi, phi)
    logp = z.log_softmax(-1)
    s0 = 1.0 * logp[0, 0] + 0.3 * logp[0, 1] - 0.5 * logp[0, 2]
    s1 = -0.5 * logp[1, 0] + 0.2 * logp[1, 1] + 1.0 * logp[1, 2]
    expected = -(torch.sigmoid(s0) + torch.sigmoid(s1)) / 2
    torch.testing.assert_close(loss(z, y), expected)


def test_sigmoid_form_gradient_is_ce_gradient_times_documented_ratio() -> None:
    z = torch.tensor([[1.0, -0.5, 0.3, 2.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1])
    (g_sig,) = torch.autograd.grad(ClassPairLoss(4, form="sigmoid").double()(z, y), z)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(z, y), z)
    p_y = float(z.detach().softmax(-1)[0, 1])
    torch.testing.assert_close(g_sig, g_ce * sigmoid_gradient_ratio(p_y))
    assert sigmoid_gradient_ratio(0.01) == pytest.approx(0.0098, abs=1e-4)
    assert sigmoid_gradient_ratio(0.5) == pytest.approx(0.2222, abs=1e-4)
    assert sigmoid_gradient_ratio(1.0) == 0.25


@pytest.mark.parametrize("form", ["sigmoid", "log_prob"])
def test_class_pair_gradients_float64_finite_differences(form: str) -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    phi = (torch.eye(4, dtype=torch.float64) + 0.3 * torch.randn(4, 4, dtype=torch.float64, generator=gen))
    phi.requires_grad_(True)
    y = torch.tensor([0, 3, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda a, b: class_pair_loss(a, y, b, form=form, scale=1.5), (z, phi))
    assert torch.autograd.gradgradcheck(lambda a, b: class_pair_loss(a, y, b, form=form), (z, phi))


def test_parameter_vector_layouts_and_names() -> None:
    sym = ClassPairLoss(4)
    assert sym.parameter_vector().shape == (6,)
    assert sym.parameter_names[:3] == ["phi[0,1]", "phi[0,2]", "phi[0,3]"]
    full = ClassPairLoss(4, symmetric=False, adapt_diagonal=True)
    assert full.parameter_vector().shape == (12 + 4,)
    assert full.parameter_names[-1] == "phi[3,3]"
    torch.testing.assert_close(full.parameter_vector()[-4:], torch.ones(4))
    v = torch.linspace(-0.9, 0.9, 16)
    v[-4:] = 1.5
    full.set_parameter_vector(v)
    torch.testing.assert_close(full.parameter_vector(), v)
    assert full.phi[0, 1] != full.phi[1, 0]  # asymmetric layout writes entries separately
    lo, hi = full.bounds
    assert lo[:12].eq(-1).all() and hi[:12].eq(1).all() and lo[12:].eq(0).all() and hi[12:].eq(2).all()
    for loss in (sym, full, PairDistanceLoss()):
        assert isinstance(loss, ParametricLoss)
        assert len(loss.parameter_names) == loss.parameter_vector().numel()


def test_bounds_clipping_and_clamp_hits() -> None:
    loss = ClassPairLoss(3, bounds=(-0.5, 0.25))
    hits = apply_parameter_delta(loss, torch.tensor([0.2, 0.4, -0.9]))
    assert hits == 2
    torch.testing.assert_close(loss.parameter_vector(), torch.tensor([0.2, 0.25, -0.5]))
    assert loss.phi[2, 1] == -0.5 and loss.phi[2, 0] == 0.25 and loss.phi[1, 1] == 1.0  # symmetric, diagonal untouched
    loss.set_parameter_vector(torch.tensor([5.0, -5.0, 0.0]))
    torch.testing.assert_close(loss.parameter_vector(), torch.tensor([0.25, -0.5, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        apply_parameter_delta(loss, torch.zeros(4))
    with pytest.raises(ValueError, match="lower < upper"):
        ClassPairLoss(3, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"`form` to be one of \['log_prob', 'sigmoid'\], but got 'hinge'"):
        ClassPairLoss(3, form="hinge")  # type: ignore[arg-type]


def test_log_prob_form_hand_value_and_bounded_below_for_negative_weights() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    loss = ClassPairLoss(3, form="log_prob").double()
    lo, hi = loss.bounds
    assert lo.eq(-1).all() and hi.eq(1).all()
    loss.set_parameter_vector(torch.tensor([0.3, -0.5, 0.2], dtype=torch.float64))  # (0,1), (0,2), (1,2)
    p = z.softmax(-1)
    # sample 0 (y=0): −[log p_0 + 0.3 log p_1 + 0.5 log(1 − p_2)]; sample 1 (y=2): −[0.2 log p_1 + log p_2 + 0.5 log(1 − p_0)]
    l0 = -(p[0, 0].log() + 0.3 * p[0, 1].log() + 0.5 * (1 - p[0, 2]).log())
    l1 = -(0.2 * p[1, 1].log() + p[1, 2].log() + 0.5 * (1 - p[1, 0]).log())
    torch.testing.assert_close(loss(z, y), (l0 + l1) / 2)
    # −Φ_02 log p_2 with Φ_02 < 0 would fall without limit as p_2 → 0; this form stays ≥ 0 and
    # finite even where p_j rounds to 1 in float32
    far = torch.tensor([[0.0, 0.0, -200.0], [200.0, 0.0, 0.0]])
    value = loss.float()(far, y)
    assert torch.isfinite(value) and value >= 0
    phi = torch.eye(3, dtype=torch.float64)
    phi[0, 2] = phi[2, 0] = -0.5
    naive = -(phi.index_select(0, y[:1]) * far[:1].double().log_softmax(-1)).sum()
    assert naive < -90
    with pytest.raises(ValueError, match="`diagonal_bounds` to have a lower bound >= 0"):
        ClassPairLoss(3, diagonal_bounds=(-1.0, 2.0))


def test_pair_distance_loss_at_unit_weights_is_contrastive() -> None:
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    loss = PairDistanceLoss(bins=4, margin=1.0).double()
    en = F.normalize(e, dim=-1)
    terms = []
    for i in range(6):
        for j in range(i + 1, 6):
            d = torch.linalg.vector_norm(en[i] - en[j])
            terms.append(d**2 if labels[i] == labels[j] else torch.clamp(1.0 - d, min=0) ** 2)
    torch.testing.assert_close(loss(e, labels), torch.stack(terms).mean())
    # a weight multiplies exactly the pairs in its bin
    w = torch.ones(8, dtype=torch.float64)
    w[4:] = 0.0  # drop every negative pair
    loss.set_parameter_vector(w)
    pos_only = torch.stack([t for t, (i, j) in zip(terms, [(i, j) for i in range(6) for j in range(i + 1, 6)])
                            if labels[i] == labels[j]]).sum() / len(terms)
    torch.testing.assert_close(loss(e, labels), pos_only)


def test_pair_distance_gradients_float64() -> None:
    gen = torch.Generator().manual_seed(1)
    e = torch.randn(5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 1])
    wp = torch.rand(4, dtype=torch.float64, generator=gen)
    wn = torch.rand(4, dtype=torch.float64, generator=gen)
    for base in ("contrastive", "margin"):
        assert torch.autograd.gradcheck(
            lambda x, base=base: pair_distance_loss(x, labels, wp, wn, base=base, margin=0.2), (e,)
        )


def _histograms_by_hand(e: torch.Tensor, labels: list[int], bins: int, max_distance: float) -> tuple[list[float],
                                                                                                   list[float]]:
    """Positive/negative pair-distance histograms in plain Python: bin floor(d / max · B), last bin
    for d >= max, each normalised to sum 1."""
    counts = {True: [0] * bins, False: [0] * bins}
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d = sum((float(a) - float(b)) ** 2 for a, b in zip(e[i], e[j])) ** 0.5
            counts[labels[i] == labels[j]][min(int(d / max_distance * bins), bins - 1)] += 1
    pos, neg = ([c / max(1, sum(cs)) for c in cs] for cs in (counts[True], counts[False]))
    return pos, neg


def test_pair_distance_histograms_match_pairs_by_hand() -> None:
    """The validation state of ALA's metric learning (Huang et al., ICML 2019, metric learning; reconstructed): one
    share per Φ entry."""
    g = torch.Generator().manual_seed(3)
    e = torch.randn(40, 5, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    pos, neg = pair_distance_histograms(e, labels, bins=6)
    want_pos, want_neg = _histograms_by_hand(F.normalize(e.double(), dim=1), labels.tolist(), 6, 2.0)
    torch.testing.assert_close(pos, torch.tensor(want_pos, dtype=torch.float32))
    torch.testing.assert_close(neg, torch.tensor(want_neg, dtype=torch.float32))
    assert pos.sum().item() == pytest.approx(1.0) and neg.sum().item() == pytest.approx(1.0)
    # unnormalised embeddings: distances beyond max_distance land in the last bin
    raw_pos, raw_neg = pair_distance_histograms(e * 3, labels, bins=4, max_distance=1.5, normalize=False)
    want_pos, want_neg = _histograms_by_hand(e.double() * 3, labels.tolist(), 4, 1.5)
    torch.testing.assert_close(raw_neg, torch.tensor(want_neg, dtype=torch.float32))
    assert raw_neg[-1] > 0.9
    # the loss's own bins, and a set without negative pairs
    loss = PairDistanceLoss(bins=6)
    torch.testing.assert_close(loss.histograms(e, labels)[0], pos)
    only_pos, none = pair_distance_histograms(e[:5], torch.zeros(5, dtype=torch.long), bins=3)
    assert only_pos.sum().item() == pytest.approx(1.0) and none.eq(0).all()


def test_pair_distance_reference_loss_ignores_phi() -> None:
    g = torch.Generator().manual_seed(4)
    e, labels = torch.randn(8, 3, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    loss = PairDistanceLoss(bins=4)
    at_one = loss(e, labels)
    loss.set_parameter_vector(torch.linspace(0.0, 2.0, 8))
    assert not torch.allclose(loss(e, labels), at_one)
    torch.testing.assert_close(loss.reference_loss(e, labels), at_one)


def test_default_form_is_log_prob_exactly_cross_entropy_at_identity() -> None:
    z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 1])
    torch.testing.assert_close(ClassPairLoss(4).double()(z, y), F.cross_entropy(z, y))


def test_class_weight_loss_is_weighted_cross_entropy_by_hand() -> None:
    from adaloss.losses import ClassWeightLoss

    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    loss = ClassWeightLoss(3, center=False).double()
    assert torch.allclose(loss(z, y), F.cross_entropy(z, y))  # Φ = 0 is cross-entropy
    loss.set_parameter_vector(torch.tensor([0.5, -1.0, 3.0]))  # 3.0 clipped to the upper bound 2
    assert loss.parameter_vector().tolist() == [0.5, -1.0, 2.0]
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).exp()
    nll = -torch.log_softmax(z, 1)[torch.arange(12), y]
    assert torch.allclose(loss(z, y), (w[y] * nll).sum() / w[y].sum())
    # a shift of every log-weight changes nothing (the loss is normalised by the total weight)
    before = loss(z, y)
    loss.set_parameter_vector(torch.tensor([0.0, -1.5, 1.5]))
    assert torch.allclose(loss(z, y), before)
    assert loss.parameter_names == ["log_w[0]", "log_w[1]", "log_w[2]"]


def test_centred_class_weights_drop_the_common_mode_that_would_pin_them_to_a_bound() -> None:
    from adaloss.losses import ClassWeightLoss
    from adaloss.losses.ala import apply_parameter_delta

    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    centred, free = ClassWeightLoss(3).double(), ClassWeightLoss(3, center=False).double()
    centred.set_parameter_vector(torch.tensor([0.5, -1.0, 2.5]))
    # the mean (2 / 3) is taken off before the bounds apply: nothing is clipped here
    torch.testing.assert_close(centred.parameter_vector(),
                               torch.tensor([0.5, -1.0, 2.5], dtype=torch.float64) - 2 / 3)
    free.set_parameter_vector(torch.tensor([0.5, -1.0, 2.5]))
    assert free.parameter_vector().tolist() == [0.5, -1.0, 2.0]
    # a controller that keeps pushing every weight up: uncentred, all of them reach the bound and the
    # relative move (class 0 up against the others) that does change the loss is blocked
    for loss in (centred, free):
        for _ in range(20):
            apply_parameter_delta(loss, torch.full((3,), 0.3, dtype=torch.float64))
    assert free.parameter_vector().tolist() == [2.0, 2.0, 2.0]
    assert torch.allclose(free(z, y), F.cross_entropy(z, y))
    for loss in (centred, free):
        apply_parameter_delta(loss, torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64))
    assert free.parameter_vector().tolist() == [2.0, 2.0, 2.0]  # the move was lost
    phi = centred.parameter_vector()
    torch.testing.assert_close(phi[0] - phi[1], torch.tensor(0.3 + 1.5, dtype=torch.float64))
    assert abs(float(phi.sum())) < 1e-12
    assert "center=True" in repr(centred) and centred.config()["center"] is True
    with pytest.raises(TypeError, match="`center` to be a bool, but got 'yes'"):
        ClassWeightLoss(3, center="yes")  # type: ignore[arg-type]


def _centred_in_bounds_by_bisection(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    a, b = float(v.min()) - hi, float(v.max()) - lo  # mean(clip(v - c)) is hi at a and lo at b
    for _ in range(200):
        c = (a + b) / 2
        a, b = (c, b) if float((v - c).clamp(lo, hi).mean()) > 0 else (a, c)
    return (v - (a + b) / 2).clamp(lo, hi)


def test_centred_in_bounds_is_the_nearest_centred_vector_within_the_bounds() -> None:
    from adaloss.losses.ala import centred_in_bounds

    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        v = 3 * torch.randn(7, generator=g, dtype=torch.float64)
        x = centred_in_bounds(v, -2.0, 2.0)
        torch.testing.assert_close(x, _centred_in_bounds_by_bisection(v, -2.0, 2.0), atol=1e-12, rtol=0)
        assert abs(float(x.mean())) < 1e-12 and bool(((x >= -2) & (x <= 2)).all())
        torch.testing.assert_close(centred_in_bounds(v + 0.7, -2.0, 2.0), x, atol=1e-12, rtol=0)
        torch.testing.assert_close(centred_in_bounds(x, -2.0, 2.0), x, atol=1e-12, rtol=0)
        # no centred vector within the bounds is nearer (the projection's optimality)
        for _ in range(5):
            y = centred_in_bounds(x + 0.3 * torch.randn(7, generator=g, dtype=torch.float64), -2.0, 2.0)
            assert float((v - v.mean() - x).norm()) <= float((v - v.mean() - y).norm()) + 1e-12
    # hand-computed: (3, 0, -2) keeps 2 and -2 on the bounds, and 0 is already centred
    torch.testing.assert_close(centred_in_bounds(torch.tensor([3.0, 0.0, -2.0]), -2.0, 2.0),
                               torch.tensor([2.0, 0.0, -2.0]))
    # 0 outside the bounds: the mean is the nearest bound
    torch.testing.assert_close(centred_in_bounds(torch.tensor([0.0, 5.0]), 1.0, 4.0), torch.tensor([1.0, 1.0]))


def test_a_push_every_class_weight_shares_does_not_move_them_at_a_bound() -> None:
    from adaloss.losses import ClassWeightLoss
    from adaloss.losses.ala import apply_parameter_delta

    loss = ClassWeightLoss(3).double()
    loss.set_parameter_vector(torch.tensor([2.0, 0.0, -2.0]))
    # the loss cannot see a shared push; clipped before the centring it would have shrunk the spread
    # (clip(2.3, 0.3, -1.7) = (2, 0.3, -1.7), centred: (1.8, 0.1, -1.9))
    hits = apply_parameter_delta(loss, torch.full((3,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(loss.parameter_vector(), torch.tensor([2.0, 0.0, -2.0], dtype=torch.float64))
    assert hits == 1  # log_w[0] was asked for 2.3 and held at 2
    # a relative move: (2, 0.5, -2) minus 1/6 would leave -2 below its bound, so the shift is 1/4
    assert apply_parameter_delta(loss, torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)) == 0
    torch.testing.assert_close(loss.parameter_vector(), torch.tensor([1.75, 0.25, -2.0], dtype=torch.float64))


def test_class_weight_loss_inverse_frequency_oracle() -> None:
    from adaloss.losses import ClassWeightLoss

    loss = ClassWeightLoss.inverse_frequency([900, 100, 300])
    w = loss.weights
    assert torch.allclose(w / w[0], torch.tensor([1.0, 9.0, 3.0]), rtol=1e-5)
    assert abs(float(loss.parameter_vector().sum())) < 1e-5  # centred
    with pytest.raises(ValueError, match="counts"):
        ClassWeightLoss.inverse_frequency([10, 0])
    with pytest.raises(ValueError, match="bounds"):
        ClassWeightLoss(3, bounds=(1.0, -1.0))


def test_frequency_weight_loss_is_cross_entropy_weighted_by_a_power_of_frequency() -> None:
    from adaloss.losses import FrequencyWeightLoss

    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 0])
    loss = FrequencyWeightLoss(3).double()
    assert torch.allclose(loss(z, y), F.cross_entropy(z, y))  # τ = 0 is cross-entropy
    assert loss.class_counts.tolist() == [7.0, 2.0, 1.0]  # counted from the training targets
    loss.eval()
    loss(z, y)
    assert loss.class_counts.tolist() == [7.0, 2.0, 1.0]  # not in eval mode
    loss.set_parameter_vector(torch.tensor([0.5]))
    w = torch.tensor([8.0, 3.0, 2.0], dtype=torch.float64) ** -0.5  # (count + 1)^(−τ), by hand
    nll = -torch.log_softmax(z, 1)[torch.arange(10), y]
    assert torch.allclose(loss(z, y), (w[y] * nll).sum() / w[y].sum())
    loss.set_parameter_vector(torch.tensor([5.0]))
    assert loss.parameter_vector().tolist() == [1.0]  # clipped to the upper bound
    assert loss.parameter_names == ["tau"]
    # the tied form of ClassWeightLoss: τ = 1 with fixed counts is the inverse-frequency oracle
    from adaloss.losses import ClassWeightLoss

    fixed = FrequencyWeightLoss(3, counts=[900, 100, 300])
    fixed.set_parameter_vector(torch.tensor([1.0]))
    torch.testing.assert_close(fixed.weights, ClassWeightLoss.inverse_frequency([900, 100, 300]).weights)
    fixed(z.float(), y)
    assert fixed.class_counts.tolist() == [900.0, 100.0, 300.0]  # fixed counts are not updated
    state = loss.state_dict()
    again = FrequencyWeightLoss(3).double()
    again.load_state_dict(state)
    again.eval()  # in training mode it would count this batch first
    assert torch.allclose(again(z, y), loss(z, y))
    with pytest.raises(ValueError, match="counts"):
        FrequencyWeightLoss(3, counts=[1, 2])
    with pytest.raises(ValueError, match="bounds"):
        FrequencyWeightLoss(3, bounds=(1.0, 0.0))
