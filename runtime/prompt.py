"""Few-shot prompts as LLM token ids, in UniAudio 1.5's layout (torch-free, no llama_cpp).

Layout (official-llm-codec.md §4.1; every text string is encoded *separately*, so each gets its
own SentencePiece dummy-prefix space)::

    [BOS] + enc(instruction)                                   # instruction optional
    R × for each demo: enc("###\\nInput: < ") + audio + enc(" >\\nOutput: ") + answer
    query:             enc("###\\nInput: < ") + audio + enc(" >\\nOutput: ")

`answer` is enc(label) for classification or an audio span for generation tasks. Text inputs
(TTS / text-to-sound, §4.2/§4.4, no official script) use enc("###\\nInput: {text}\\nOutput: ").

Audio spans: per 4-frame group the codec emits 1 layer-1, 2 layer-2 and 4 layer-3 tokens.
`major` layout = all layer-1 tokens, then all layer-2, then all layer-3 (official);
`interleaved` = group by group (1 L1, 2 L2, 4 L3). Layer selection `semantic` keeps layer 1 only.

The tokenizer is a callable ``text -> ids`` without BOS (e.g. `FrozenLM.tokenize_text`); audio
tokens are always ids, never text (llama.cpp's SPM tokenizer differs from SentencePiece).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, NamedTuple, Sequence, Union

import numpy as np

from runtime.lm_errors import ContextOverflowError

Tokenize = Callable[[str], list[int]]
Layout = Literal["major", "interleaved"]
Layers = Literal["semantic", "all"]
TOKENS_PER_GROUP = (1, 2, 4)  # layer-1/2/3 tokens per 4-frame group (VQ strides 4, 2, 1): the default
PerGroup = Sequence[int]


def tokens_per_group(strides: Sequence[int]) -> tuple[int, ...]:
    """Tokens of each layer per layer-1 group, from a bundle's VQ strides ((4, 2, 1) -> (1, 2, 4))."""
    per = tuple(int(strides[0]) // int(s) for s in strides)
    if len(per) != 3:
        raise ValueError(f"prompts carry three codec layers (l1, l2, l3); the codec has {len(per)} (strides {strides})")
    return per

TTS_INSTRUCTION = ("Instruction: Learn a foreign language for different digits, then generate the "
                   "corresponding number using foreign language based on instruction\n")


class AudioTokens(NamedTuple):
    """One clip's codes already mapped to LLM token ids: l1 (g,), l2 (2g,), l3 (4g,).

    l2 and l3 may be empty for semantic-only (layer 1) use.
    """

    l1: Sequence[int]
    l2: Sequence[int] = ()
    l3: Sequence[int] = ()

    @property
    def n_groups(self) -> int:
        return len(self.l1)

    def check(self, layers: Layers, per_group: PerGroup = TOKENS_PER_GROUP) -> None:
        g = self.n_groups
        if g == 0:
            raise ValueError("audio span is empty (0 groups)")
        if layers == "all" and [len(x) for x in self] != [n * g for n in per_group]:
            raise ValueError(f"audio tokens must have {', '.join(f'{n}g' for n in per_group)} ids per layer "
                             f"for g={g} groups; got {len(self.l1)}, {len(self.l2)}, {len(self.l3)}")


def _check_mode(layout: str, layers: str) -> None:
    if layout not in ("major", "interleaved"):
        raise ValueError(f"layout must be 'major' or 'interleaved', got {layout!r}")
    if layers not in ("semantic", "all"):
        raise ValueError(f"layers must be 'semantic' or 'all', got {layers!r}")


def span_layer_schedule(n_groups: int, layout: Layout = "major", layers: Layers = "all",
                        per_group: PerGroup = TOKENS_PER_GROUP) -> list[int]:
    """Layer (1, 2 or 3) of each position of an audio span of ``n_groups`` groups; ``per_group`` is
    each layer's tokens per group (``tokens_per_group(bundle strides)``)."""
    _check_mode(layout, layers)
    if layers == "semantic":
        return [1] * n_groups
    if layout == "major":
        return [l for l, n in enumerate(per_group, start=1) for _ in range(n * n_groups)]
    return [l for l, n in enumerate(per_group, start=1) for _ in range(n)] * n_groups


def audio_span(audio: AudioTokens, layout: Layout = "major", layers: Layers = "all",
               per_group: PerGroup = TOKENS_PER_GROUP) -> list[int]:
    """Flatten a clip's three layers into the LLM-sequence order given by layout/layers."""
    _check_mode(layout, layers)
    audio.check(layers, per_group)
    per_layer = [list(map(int, x)) for x in audio]
    if layers == "semantic":
        return per_layer[0]
    if layout == "major":
        return [t for x in per_layer for t in x]
    return [t for g in range(audio.n_groups) for x, n in zip(per_layer, per_group) for t in x[g * n:(g + 1) * n]]


def split_audio_span(ids: Sequence[int], layout: Layout, layers: Layers, n_groups: int,
                     per_group: PerGroup = TOKENS_PER_GROUP) -> AudioTokens:
    """Inverse of `audio_span`: a generated span of ``n_groups`` groups back to (l1, l2, l3)."""
    sched = span_layer_schedule(n_groups, layout, layers, per_group)
    if len(ids) != len(sched):
        raise ValueError(f"span has {len(ids)} ids, expected {len(sched)} for {n_groups} groups "
                         f"({layout}, {layers})")
    per: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for tok, layer in zip(ids, sched):
        per[layer].append(int(tok))
    return AudioTokens(per[1], per[2], per[3])


Answer = Union[str, AudioTokens]


@dataclass(frozen=True)
class Demo:
    """One demonstration: an input (audio or text) and its answer (label text or audio)."""

    input: Answer
    output: Answer


@dataclass(frozen=True)
class Template:
    """The text around inputs/answers (official strings; `text_input` is inferred for TTS)."""

    audio_prefix: str = "###\nInput: < "
    audio_suffix: str = " >\nOutput: "
    text_input: str = "###\nInput: {text}\nOutput: "


@dataclass(frozen=True)
class Prompt:
    """A prompt's ids and where its fixed prefix (instruction + demonstrations) ends."""

    ids: list[int]
    prefix_len: int
    header_len: int
    demo_lens: list[int] = field(default_factory=list)
    repeats: int = 1

    @property
    def query_len(self) -> int:
        return len(self.ids) - self.prefix_len

    @property
    def prefix(self) -> list[int]:
        return self.ids[:self.prefix_len]

    @property
    def query(self) -> list[int]:
        return self.ids[self.prefix_len:]


def classification_instruction(labels: Sequence[str]) -> str:
    """Task induction text over the sorted unique labels (np.unique in the official script)."""
    classes = sorted(set(labels))
    return ("For each of the following input output pairs, output is one of ["
            + " or ".join(f"'{c}'" for c in classes) + "]\n")


class _Encoder:
    """Per-build memo of the text encoder plus the span options."""

    def __init__(self, tokenize: Tokenize, layout: Layout, layers: Layers, template: Template,
                 per_group: PerGroup = TOKENS_PER_GROUP):
        _check_mode(layout, layers)
        self.tokenize, self.layout, self.layers, self.t = tokenize, layout, layers, template
        self.per_group = tuple(per_group)
        self.memo: dict[str, list[int]] = {}

    def text(self, s: str) -> list[int]:
        if s not in self.memo:
            self.memo[s] = [int(i) for i in self.tokenize(s)]
        return self.memo[s]

    def answer(self, a: Answer) -> list[int]:
        return audio_span(a, self.layout, self.layers, self.per_group) if isinstance(a, AudioTokens) else self.text(a)

    def query(self, x: Answer) -> list[int]:
        if isinstance(x, AudioTokens):
            return (self.text(self.t.audio_prefix) + audio_span(x, self.layout, self.layers, self.per_group)
                    + self.text(self.t.audio_suffix))
        return self.text(self.t.text_input.format(text=x))


def _parts(tokenize: Tokenize, demos: Sequence[Demo], query: Answer, instruction: str | None,
           bos_id: int | None, layout: Layout, layers: Layers, template: Template,
           per_group: PerGroup = TOKENS_PER_GROUP):
    enc = _Encoder(tokenize, layout, layers, template, per_group)
    header = ([bos_id] if bos_id is not None else []) + (enc.text(instruction) if instruction else [])
    demo_ids = [enc.query(d.input) + enc.answer(d.output) for d in demos]
    return header, demo_ids, enc.query(query)


def _fit(header: list[int], demo_ids: list[list[int]], query: list[int], repeats: int,
         n_ctx: int, reserve: int) -> int:
    budget = n_ctx - reserve - len(header) - len(query)
    k, used = 0, 0
    for d in demo_ids:
        if used + repeats * len(d) > budget:
            break
        used += repeats * len(d)
        k += 1
    return k if budget >= 0 else 0


def build_episode_prompt(tokenize: Tokenize, demos: Sequence[Demo], query: Answer, *,
                         instruction: str | None = None, bos_id: int | None = 1,
                         layout: Layout = "major", layers: Layers = "semantic", repeats: int = 1,
                         template: Template = Template(), n_ctx: int | None = None,
                         reserve: int = 0, per_group: PerGroup = TOKENS_PER_GROUP) -> Prompt:
    """Token ids of one few-shot episode; the query is last and ends after "Output: ".

    per_group: tokens of each codec layer per group, from the bundle (``tokens_per_group(strides)``).
    repeats: the whole demonstration block is written ``repeats`` times (paper's "Repeats").
    n_ctx/reserve: if given, raise `ContextOverflowError` when ids + ``reserve`` generated tokens
    exceed n_ctx, saying how many of the demonstrations would fit.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    header, demo_ids, q = _parts(tokenize, demos, query, instruction, bos_id, layout, layers, template, per_group)
    block = [t for d in demo_ids for t in d]
    ids = header + block * repeats + q
    if n_ctx is not None and len(ids) + reserve > n_ctx:
        k = _fit(header, demo_ids, q, repeats, n_ctx, reserve)
        raise ContextOverflowError(
            f"prompt has {len(ids)} tokens (+{reserve} to generate) but the LLM context is {n_ctx} "
            f"tokens; only {k} of the {len(demos)} demonstrations fit (repeats={repeats}): "
            f"use fewer shots/repeats, shorter clips, layers='semantic', or a larger n_ctx",
            len(ids) + reserve, n_ctx)
    return Prompt(ids, len(header) + len(block) * repeats, len(header),
                  [len(d) for d in demo_ids], repeats)


def max_demos_that_fit(tokenize: Tokenize, demos: Sequence[Demo], query: Answer, n_ctx: int, *,
                       reserve: int = 0, instruction: str | None = None, bos_id: int | None = 1,
                       layout: Layout = "major", layers: Layers = "semantic", repeats: int = 1,
                       template: Template = Template(), per_group: PerGroup = TOKENS_PER_GROUP) -> int:
    """How many of the first demonstrations fit in n_ctx with the query and ``reserve`` tokens."""
    header, demo_ids, q = _parts(tokenize, demos, query, instruction, bos_id, layout, layers, template, per_group)
    return _fit(header, demo_ids, q, repeats, n_ctx, reserve)


def label_candidates(tokenize: Tokenize, labels: Sequence[str]) -> list[list[int]]:
    """Token ids of each unique label (sorted), as answers are encoded in demonstrations."""
    return [[int(i) for i in tokenize(c)] for c in sorted(set(labels))]


def label_step_masks(tokenize: Tokenize, labels: Sequence[str], n_vocab: int, eos_id: int,
                     n_steps: int = 16) -> list[np.ndarray]:
    """The official constrained-decoding table: step j allows the j-th token of any label+EOS.

    Returns n_steps bool masks (n_vocab,). Steps past the longest label+EOS allow only id 0
    (the official all-zero row yields argmax 0, `<unk>`, which decodes to nothing).
    """
    masks = [np.zeros(n_vocab, dtype=bool) for _ in range(n_steps)]
    for ids in label_candidates(tokenize, labels):
        for j, tok in enumerate((ids + [eos_id])[:n_steps]):
            masks[j][tok] = True
    for m in masks:
        if not m.any():
            m[0] = True
    return masks
