"""Few-shot text-to-sound (paper App. D.2): a sound label -> a clip of the demonstrated length.

Same template as TTS: each demonstration's input text is its manifest ``text``, or
``"an audio of (<label>)"`` built from its ``label``; the query label is formatted the same way
(a query that already starts with "an audio of" is used verbatim).
"""
from __future__ import annotations

from runtime.tasks.common import FewShotEngine, TaskError, TaskOptions
from runtime.tasks.demos import DemoSet
from runtime.tasks.tts import GenerationResult, text_to_audio

TEMPLATE = "an audio of ({label})"
INSTRUCTION = ("Instruction: Learn the sound of each label, then generate the sound of the label in the "
               "last input\n")


def label_text(label: str) -> str:
    label = label.strip()
    if not label:
        raise TaskError("the input label is empty")
    return label if label.startswith("an audio of") else TEMPLATE.format(label=label.replace("_", " "))


def text2sound(engine: FewShotEngine, demo_set: DemoSet, label: str,
               opts: TaskOptions = TaskOptions()) -> GenerationResult:
    """Generate a clip of ``label`` from label -> clip demonstrations (``opts.shots`` first rows)."""
    opts = opts.with_defaults("text2sound", demo_set.info)
    rows = demo_set.select_first(opts.shots)
    pairs = [(r.text or label_text(r.string("label")), r.path("output")) for r in rows]
    return text_to_audio(engine, pairs, label_text(label), opts, INSTRUCTION)
