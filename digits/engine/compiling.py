"""Compiling a model as the Trainer trains it: optimizer, loss, metrics, schedule, fused
batch normalization and steps per execution. The bench compiles its contenders here too.
"""

from __future__ import annotations

from digits.engine.config import TrainerSettings


def make_optimizer(name: str, learning_rate, **options):
    """A Keras optimizer by name ("adam", "adamw", "sgd" with Nesterov momentum, "rmsprop"),
    with Keras' own `options` on top (`use_ema=True, ema_momentum=0.99`: the `EMA` callback's)."""
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, **options)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop}[name](learning_rate=learning_rate, **options)


def outputs_logits(model) -> bool:
    """Whether `model` outputs logits rather than probabilities: what it declares
    (`model.outputs_logits = True`), else what its compiled loss says (`from_logits=True`).
    Everything downstream of `Trainer.predict` reads probabilities (the softmax of logits)."""
    declared = getattr(model, "outputs_logits", None)
    if declared is not None:
        return bool(declared)
    return bool(getattr(getattr(model, "loss", None), "from_logits", False))


def compile_model(model, config: TrainerSettings, steps_per_epoch: int, strategy=None, *,
                  confusion_matrix: bool = True, jit_compile: bool = False,
                  num_classes: int | None = None, optimizer_options: dict | None = None) -> int:
    """Compile `model` for a run of `config`; returns the steps per execution it uses.

    An uncompiled model gets `config`'s optimizer with cosine (or constant) learning-rate
    decay over the whole run, cross-entropy smoothed by `label_smoothing`, accuracy and the
    streaming confusion matrix (`confusion_matrix=False` leaves it out: XLA cannot compile it).
    `optimizer_options` go to the optimizer as they are (what the callbacks asked for through
    `Callback.optimizer_options`: a `learning_rate` there replaces the schedule).
    A model the user compiled keeps their choices; only the execution grouping is set.
    """
    import keras
    import tensorflow as tf

    from digits.engine.metrics import SmoothedSparseCrossentropy, compiled_metrics

    strategy = strategy or tf.distribute.get_strategy()
    spe = config.steps_per_execution_for(steps_per_epoch)
    if config.fused_batch_norm:
        from digits.speed.fusion import fuse_batch_norm

        fuse_batch_norm(model)
    if model.compiled:
        model.steps_per_execution = spe
        build_optimizer(model, strategy)
        return spe
    options = dict(optimizer_options or {})
    lr = options.pop("learning_rate", None)
    if lr is None:
        lr = learning_rate_schedule(config, steps_per_epoch)
    with strategy.scope():
        optimizer = make_optimizer(config.optimizer, lr, **options)  # its variables belong in the scope
        logits = outputs_logits(model)
        model.compile(
            optimizer=optimizer,
            loss=(SmoothedSparseCrossentropy(config.label_smoothing, from_logits=logits)
                  if config.label_smoothing
                  else keras.losses.SparseCategoricalCrossentropy(from_logits=logits)),
            metrics=compiled_metrics(num_classes or model.output_shape[-1],
                                     confusion_matrix=confusion_matrix),
            steps_per_execution=spe,
            jit_compile=jit_compile,  # XLA made a small CNN ~9x slower on CPU here
        )
    build_optimizer(model, strategy)
    return spe


def learning_rate_schedule(config: TrainerSettings, steps_per_epoch: int):
    """The learning rate over the run: `config.learning_rate` decayed by a cosine to 1% of
    itself (or held constant, or restarted `lr_cycles` times). Stochastic weight averaging
    replaces it with its own (`digits.callbacks.swa`).
    """
    import keras

    total_steps = max(1, steps_per_epoch * config.max_epochs)
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_cycles > 1:  # restarts: each cycle decays from the full rate again
        return keras.optimizers.schedules.CosineDecayRestarts(
            config.learning_rate, total_steps // config.lr_cycles, t_mul=1.0, m_mul=1.0,
            alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps, alpha=0.01)


def build_optimizer(model, strategy=None) -> None:
    """Create the optimizer's variables now, before Keras traces the training step.

    Left to Keras, the first traced step creates them (Adam's moments), and a traced
    function that creates variables is traced a second time: the default cnn's step was
    traced twice, 0.9 s + 0.6 s, and is now traced once, 0.5 s, in every fit.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built or not model.built:
        return
    variables = model.trainable_variables
    if variables:
        import tensorflow as tf

        with (strategy or tf.distribute.get_strategy()).scope():
            optimizer.build(variables)
