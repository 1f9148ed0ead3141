"""The training engine: the `Trainer` (a front), its settings, compiling, the hook dispatcher,
the step counter, the compiled metrics and the test result.

Nothing is imported here, so `import digits.engine` stays free of TensorFlow.
"""
