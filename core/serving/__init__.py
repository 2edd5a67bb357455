"""Serving a trained run: prediction, evaluation and Grad-CAM (``predict``, ``gradcam``)."""
