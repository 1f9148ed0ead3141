"""Training and inference recipes: test-time augmentation (`tta`), the learning-rate range test
(`lr_finder`) and ensembles (`ensemble`). Averaged weights are callbacks:
`digits.callbacks.ema` (`--ema`) and `digits.callbacks.swa` (`--swa`).
"""
