"""lungdemo: a chest-CT slice classifier (AlexNet) and its Gradio demo.

Research demo only: not a medical device, not for diagnosis.
"""

from __future__ import annotations

__version__ = "0.1.0"

DISCLAIMER = (
    "Research demo only. This model is not a medical device and must not be used for diagnosis or treatment decisions."
)
