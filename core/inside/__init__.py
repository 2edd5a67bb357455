"""Looking inside a network: why transfer works.

``features`` (pooled body features through the shared feature cache), ``separability``
(k-NN, linear probe, PCA), ``filters`` (first-convolution kernels as tiles),
``feature_maps`` (what each stage outputs for one photo), ``change`` (what fine-tuning
changed per stage: weights and linear CKA) and ``cli`` (``python -m core inside``).
"""
