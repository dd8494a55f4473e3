"""The Gradio web demo: one module per tab, the file lifecycle, and ``demo.build_demo`` that assembles them.

The upload reaches the model as its original bytes (events run with ``preprocess=False``), so
the page and ``/classify`` see what evaluation sees; ``app.py`` launches it.
"""
