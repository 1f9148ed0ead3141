"""keras-tuner search spaces and search runs, driving digits' Trainer.

`DigitsHyperModel` is the search space (the CNN's architecture, its optimizer and learning rate)
and trains each trial through `digits.Trainer`, so every callback plugin runs inside every
trial. `digits.tuner.search` builds keras-tuner's tuners around it and runs a search, alone or as the
chief or a worker of a distributed one; `python -m digits.tune` is its command line.

Nothing is imported here: `import digits.tuner` stays free of TensorFlow and keras-tuner.

Example:
    >>> from digits.tuner.hypermodel import DigitsHyperModel
    >>> import keras_tuner
    >>> search = keras_tuner.RandomSearch(DigitsHyperModel(), objective="val_accuracy",
    ...                                   max_trials=5, directory="logs/tune")
    >>> search.search(digits.load_dataset("mnist-5k"), epochs=3)
"""
