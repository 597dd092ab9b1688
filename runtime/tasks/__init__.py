"""Few-shot audio tasks on a frozen LLM: classify, tts, denoise, text2sound.

Each task takes a demonstration set (`runtime.tasks.demos`), a `FewShotEngine` (a codec bundle +
the LLM it was built for) and `TaskOptions`. Torch-free; `runtime/lm.py` and `runtime/lm_model.py` are the only llama_cpp users.
"""
from __future__ import annotations

from runtime.tasks.common import FewShotEngine, TaskError, TaskOptions, open_engine
from runtime.tasks.demos import DemoError, DemoRow, DemoSet, load_demo_set

TASKS = ("classify", "tts", "denoise", "text2sound")

__all__ = ["TASKS", "FewShotEngine", "TaskError", "TaskOptions", "open_engine", "DemoError", "DemoRow",
           "DemoSet", "load_demo_set"]
