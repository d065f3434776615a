"""PyTorch Lightning integration: AdaLFL under manual optimisation, ALA as a callback.

Needs the ``lightning`` extra (``pip install 'adaloss[lightning]'``); ``lightning.pytorch`` is
used when installed, else the standalone ``pytorch_lightning`` package (use the Trainer of the
same package).

**AdaLFL** replaces ``loss.backward(); optimizer.step()``, so the LightningModule optimises
manually. Mix :class:`AdaLFLMixin` in (before ``LightningModule``), set
``self.automatic_optimization = False``, build the :class:`~adaloss.AdaLFL` in
:meth:`AdaLFLMixin.configure_adalfl` from the *raw* optimiser (``self.optimizers().optimizer``),
and call :meth:`AdaLFLMixin.adalfl_step` in ``training_step``::

    class Module(AdaLFLMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.net = Net()

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def configure_adalfl(self):
            return adaloss.AdaLFL(self, self.optimizers().optimizer)

        def on_fit_start(self):
            if not self.adalfl.initialized:    # a resumed run restores a fitted loss
                self.adalfl.initialize(Module, train_loader, valid_loader, steps=250)

        def training_step(self, batch, batch_idx):
            self.adalfl_step(batch, next(self.meta_batches))   # steps, logs loss/meta_loss/...

with ``self.meta_batches = self.adalfl_meta_batches(valid_loader)`` in ``__init__``: a stream whose
position the checkpoints carry, so a resumed run continues it exactly. Lightning itself restarts a
plain DataLoader's epoch on a resume mid-epoch, so the training batches of a resumed run match an
uninterrupted one's only when the checkpoint falls on an epoch boundary (or the loader is stateful,
e.g. ``torchdata``'s ``StatefulDataLoader``) and the loader does not shuffle or is seeded.

The mixin builds the AdaLFL once (lazily, at the first use of :attr:`AdaLFLMixin.adalfl`), writes
``adalfl.state_dict()`` into Lightning checkpoints and restores it on resume. Without the mixin,
:func:`adalfl_training_step` is the step itself (and ``on_save_checkpoint`` /
``on_load_checkpoint`` are yours to write). The learned loss network is held by the AdaLFL, not
registered as a submodule, so ``self.parameters()`` stays the base model's alone.

**ALA** is a loss scheduler: pass :class:`ALACallback` to the Trainer and train with
``ala.loss`` in an ordinary (automatic) ``training_step``::

    ala = adaloss.ALA(adaloss.ClassPairLoss(10, form="log_prob"), metric="error", every=200)
    trainer = L.Trainer(callbacks=[ALACallback(ala, valid_loader)], ...)

    # in the LightningModule:
    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.ala.loss(self(x), y)

Devices: one, or ``strategy="ddp"``: the AdaLFL then averages its gradients over the process group and
starts every rank from rank 0's φ and θ by itself (see :class:`adaloss.AdaLFL`'s ``collective``).
Precision: 32-bit, or ``precision="bf16-mixed"`` (autocast to bfloat16: the loss network, its
derivatives and the meta-gradient stay float32); float16 autocast is refused by
:meth:`adaloss.AdaLFL.step`, whose functional update has no ``GradScaler`` path.
Gradient accumulation: Lightning's ``accumulate_grad_batches`` does not apply under manual
optimisation; collect the batches in ``training_step`` and pass them to
``adalfl_step(batches, meta_batch, accumulate=len(batches))`` (one optimiser step for all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "adaloss.lightning needs PyTorch Lightning (lightning>=2.0), which is not installed: "
            "pip install 'adaloss[lightning]'"
        ) from exc

from adaloss.data.batches import ResumableCycle
from adaloss.distributed import LocalCollective

if TYPE_CHECKING:
    from adaloss.methods.adalfl import AdaLFL
    from adaloss.methods.ala import ALA
    from adaloss.methods.ala.scheduler import ValidData

__all__ = ["ALACallback", "AdaLFLMixin", "adalfl_training_step"]


def _lightning_optimizer(module: pl.LightningModule, adalfl: AdaLFL) -> Any:
    """The module's ``LightningOptimizer`` that wraps ``adalfl.optimizer``."""
    found = module.optimizers(use_pl_optimizer=True)
    wrapped = found if isinstance(found, list) else [found]
    for opt in wrapped:
        if getattr(opt, "optimizer", opt) is adalfl.optimizer:
            return opt
    raise ValueError(
        "Expected `adalfl.optimizer` to be one of the module's optimizers (build the AdaLFL with the raw "
        "optimiser, `adaloss.AdaLFL(self, self.optimizers().optimizer)`), but it is not."
    )


def adalfl_training_step(
    module: pl.LightningModule,
    adalfl: AdaLFL,
    batch: Any,
    meta_batch: Any = None,
    *,
    log: bool = True,
    log_prefix: str = "",
    prog_bar: bool = False,
    batch_size: int | None = None,
    accumulate: int = 1,
) -> dict[str, Tensor]:
    """One AdaLFL step inside a manually optimised ``training_step``, counted and logged by Lightning.

    Runs ``adalfl.step(batch, meta_batch)`` as the closure of the module's ``LightningOptimizer``,
    so ``trainer.global_step`` (and with it ``max_steps``, step-based checkpointing and LR
    scheduling intervals) advances as after an ordinary manual ``opt.step()``; the raw optimiser's
    own ``step()`` then finds no gradients (AdaLFL already wrote θ' and the optimiser's state)
    and changes nothing. Step an LR scheduler yourself afterwards
    (``self.lr_schedulers().step()``), as in any manually optimised module.

    Args:
        module: the LightningModule (``automatic_optimization = False``).
        adalfl: its :class:`~adaloss.AdaLFL`, built on the raw optimiser of ``module.optimizers()``.
        batch: the training batch.
        meta_batch: the batch for the meta-objective (e.g. a validation batch; the training
            batch itself also works); ignored with ``online=False``.
        log: log the returned scalars with ``module.log`` (on step; ``loss``, ``meta_loss``,
            ``meta_skipped`` and, when on, ``extra_loss``, ``grad_norm``, ``grad_norm_ratio``).
        log_prefix: prepended to the logged names (e.g. ``"adalfl/"``).
        prog_bar: also show them in the progress bar.
        batch_size: passed to ``module.log`` (default: Lightning infers it from ``batch``).
        accumulate: gradient accumulation (Lightning's ``accumulate_grad_batches`` does not apply
            under manual optimisation): collect this many batches in ``training_step`` and pass them
            as ``batch``, a list; one optimiser step (and one ``global_step``) is taken for them.

    Returns:
        The detached scalar tensors of :meth:`adaloss.AdaLFL.step`.
    """
    if module.automatic_optimization:
        raise RuntimeError("AdaLFL steps the optimiser itself: set `self.automatic_optimization = False` in the "
                           "LightningModule's __init__.")
    trainer = module.trainer
    if trainer.world_size > 1 and isinstance(adalfl.collective, LocalCollective):
        raise NotImplementedError(
            f"adalfl_training_step runs on one device, but the Trainer has world_size={trainer.world_size}; "
            "AdaLFL would take a different step on every rank."
        )
    opt = _lightning_optimizer(module, adalfl)
    stats: dict[str, Tensor] = {}

    def closure() -> None:
        stats.update(adalfl.step(batch, meta_batch, accumulate=accumulate))

    opt.step(closure=closure)
    if log and stats:
        # detached tensors: logging them does not synchronise the device
        module.log_dict({f"{log_prefix}{k}": v for k, v in stats.items()}, on_step=True, on_epoch=False,
                        prog_bar=prog_bar, batch_size=batch_size)
    return stats


class AdaLFLMixin:
    """LightningModule mixin for AdaLFL: built once, stepped and logged, saved in checkpoints.

    Put it before ``LightningModule`` in the bases, set ``self.automatic_optimization = False``
    and override :meth:`configure_adalfl`. Then :attr:`adalfl` is the AdaLFL (built at its first
    use, once the Trainer has set up the optimisers: in ``on_fit_start`` or later),
    :meth:`adalfl_step` is the whole optimisation of a ``training_step``, and checkpoints carry
    ``adalfl.state_dict()`` under :attr:`adalfl_checkpoint_key` (restored on resume, before
    ``on_fit_start``, so ``adalfl.initialized`` tells whether :meth:`AdaLFL.initialize` still has
    to run). If you override ``on_save_checkpoint`` / ``on_load_checkpoint``, call ``super()``.
    """

    #: the checkpoint entry holding ``adalfl.state_dict()``
    adalfl_checkpoint_key: ClassVar[str] = "adalfl"

    def configure_adalfl(self) -> AdaLFL:
        """Build the module's AdaLFL, e.g. ``adaloss.AdaLFL(self, self.optimizers().optimizer)``.

        Called once, at the first use of :attr:`adalfl`; the optimisers exist by then.
        """
        raise NotImplementedError(f"{type(self).__name__} must override configure_adalfl() to return an "
                                  "adaloss.AdaLFL built on self.optimizers().optimizer.")

    @property
    def adalfl(self) -> AdaLFL:
        """The module's AdaLFL (built by :meth:`configure_adalfl` at first use)."""
        built = self.__dict__.get("_adalfl")
        if built is None:
            from adaloss.methods.adalfl import AdaLFL

            try:
                built = self.configure_adalfl()
            except AttributeError as exc:  # nn.Module.__getattr__ would report "no attribute 'adalfl'"
                raise RuntimeError(f"configure_adalfl() failed: {exc}") from exc
            if not isinstance(built, AdaLFL):
                raise TypeError(f"Expected configure_adalfl() to return an adaloss.AdaLFL, but got "
                                f"{type(built).__name__}.")
            in_model = {id(p) for p in built.model.parameters()}
            if any(id(p) in in_model for p in built.loss.parameters()):
                raise ValueError("The learned loss network is a submodule of the AdaLFL's model, so the base "
                                 "optimiser would train φ as part of θ: keep it out of the LightningModule's "
                                 "submodules (the AdaLFL holds it).")
            pending = self.__dict__.pop("_adalfl_pending_state", None)
            if pending is not None:
                built.load_state_dict(pending)
            self.__dict__["_adalfl"] = built
        return built

    def adalfl_meta_batches(self, batches: Any) -> ResumableCycle:
        """An endless stream of meta batches from ``batches`` (e.g. the validation DataLoader) whose
        position the mixin saves in checkpoints and restores on resume, so a resumed run draws the
        meta batches an uninterrupted one would have (``next(stream)`` in ``training_step``). Create it
        once, e.g. in ``__init__``; the loader must replay the same order when rebuilt (no shuffling,
        or a seeded ``generator``)."""
        stream = ResumableCycle(batches, name="meta_batches")
        pending = self.__dict__.pop("_adalfl_pending_stream", None)
        if pending is not None:
            stream.load_state_dict(pending)
        self.__dict__["_adalfl_meta_stream"] = stream
        return stream

    def adalfl_step(self, batch: Any, meta_batch: Any = None, **log_options: Any) -> dict[str, Tensor]:
        """:func:`adalfl_training_step` with this module's :attr:`adalfl`."""
        return adalfl_training_step(self, self.adalfl, batch, meta_batch, **log_options)  # type: ignore[arg-type]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        built = self.__dict__.get("_adalfl")
        state = built.state_dict() if built is not None else self.__dict__.get("_adalfl_pending_state")
        if state is not None:
            checkpoint[self.adalfl_checkpoint_key] = state
        stream = self.__dict__.get("_adalfl_meta_stream")
        if stream is not None:
            checkpoint[f"{self.adalfl_checkpoint_key}_meta_batches"] = stream.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        position = checkpoint.get(f"{self.adalfl_checkpoint_key}_meta_batches")
        if position is not None:
            stream = self.__dict__.get("_adalfl_meta_stream")
            if stream is not None:
                stream.load_state_dict(position)
            else:  # the stream is made later (e.g. in on_fit_start): applied when it is
                self.__dict__["_adalfl_pending_stream"] = position
        state = checkpoint.get(self.adalfl_checkpoint_key)
        if state is None:
            return
        built = self.__dict__.get("_adalfl")
        if built is not None:
            built.load_state_dict(state)
        else:  # restored before the optimisers exist: applied when the AdaLFL is built
            self.__dict__["_adalfl_pending_state"] = state


class ALACallback(pl.Callback):
    """ALA as a loss scheduler in a Lightning run.

    Calls ``ala.start(module, valid_data)`` when training starts (unless started or restored),
    ``ala.step(module, valid_data)`` after every training batch that took an optimiser step
    (``trainer.global_step`` advanced: gradient accumulation and skipped steps are not counted),
    logs what they return with ``module.log`` (``<log_prefix>ala_metric``, ``reward``, ``phi_*``,
    …; on the steps where ALA evaluates), moves the ALA loss to the module's device, and saves
    and restores ``ala.state_dict()`` with the Trainer's checkpoints.

    The module trains with ``ala.loss`` (or ``ala(outputs, targets)``): keep a reference to the
    ALA on the module (``self.ala = ala``; it is not an ``nn.Module``, so nothing is registered).

    Args:
        ala: the :class:`~adaloss.ALA` scheduler.
        valid_data: what ALA evaluates its metric on: a DataLoader, a list of batches, one
            ``(x, y)`` batch, or a callable returning one of them. Keep it the same examples
            throughout, so successive metrics compare.
        log_prefix: prepended to the logged names.
        prog_bar: also show the logged scalars in the progress bar.
    """

    def __init__(self, ala: ALA, valid_data: ValidData, *, log_prefix: str = "ala/", prog_bar: bool = False) -> None:
        from adaloss.methods.ala import ALA

        if not isinstance(ala, ALA):
            raise TypeError(f"Expected `ala` to be an adaloss.ALA, but got {type(ala).__name__}.")
        self.ala = ala
        self.valid_data = valid_data
        self.log_prefix = log_prefix
        self.prog_bar = prog_bar
        self._seen_step: int | None = None
        self._pending: dict[str, float] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ala.to(pl_module.device)
        if not self.ala.started:
            self._pending = self.ala.start(pl_module, self.valid_data)  # logged with the first step's scalars
        self._seen_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._seen_step is not None and trainer.global_step == self._seen_step:
            return  # no optimiser step on this batch
        self._seen_step = trainer.global_step
        scalars = {**self._pending, **self.ala.step(pl_module, self.valid_data)}
        self._pending = {}
        if scalars:
            pl_module.log_dict({f"{self.log_prefix}{k}": float(v) for k, v in scalars.items()}, on_step=True,
                               on_epoch=False, prog_bar=self.prog_bar, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"ala": self.ala.state_dict()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.ala.load_state_dict(state_dict["ala"])
