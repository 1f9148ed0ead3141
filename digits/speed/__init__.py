"""Making a model fast on the machine at hand: fused batch normalization (`fusion`) and the
dtype policy a run computes in (`precision`).
"""
