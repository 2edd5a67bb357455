"""transferlab's engine: data, model surgery, training, runs and prediction.

Never imports streamlit: the dashboard (``app.py``, ``pages/``) wraps this package, and
so does the command line (``python -m core``).
"""
