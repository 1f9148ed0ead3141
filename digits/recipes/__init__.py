"""Training and inference recipes: averaged weights (`averaging`), test-time augmentation
(`tta`), the learning-rate range test (`lr_finder`) and ensembles (`ensemble`).
"""
