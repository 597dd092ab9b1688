"""runtime.prompt: the paper's few-shot layout as LLaMA-2 token ids (SentencePiece tokenizer)."""
from __future__ import annotations

import numpy as np
import pytest

from fixtures_llm import sp  # noqa: F401
from runtime.lm_errors import ContextOverflowError
from runtime.prompt import (AudioTokens, Demo, audio_span, build_episode_prompt,
                            classification_instruction, label_step_masks, max_demos_that_fit,
                            span_layer_schedule, split_audio_span)

# LLaMA-2 ids (SentencePiece, each string encoded on its own, dummy prefix included).
BOS = 1
INPUT = [835, 13, 4290, 29901, 529, 29871]        # "###\nInput: < "  = ▁### \n ▁Input : ▁< ▁
OUTPUT = [29871, 1405, 13, 6466, 29901, 29871]    # " >\nOutput: "   = ▁ ▁> \n ▁Output : ▁
HAPPY, SAD = [9796], [14610]
INSTR = [1152, 1269, 310, 278, 1494, 1881, 1962, 11000, 29892, 1962, 338, 697, 310, 6024,
         29882, 14862, 29915, 470, 525, 29879, 328, 2033, 13]  # "... one of ['happy' or 'sad']\n"

A = AudioTokens([5000, 5001], [10, 11, 12, 13], [0, 1, 2, 3, 4, 5, 6, 7])   # 2 groups
B = AudioTokens([6000, 6001], [20, 21, 22, 23], [30, 31, 32, 33, 34, 35, 36, 37])
Q = AudioTokens([7000, 7001], [40, 41, 42, 43], [50, 51, 52, 53, 54, 55, 56, 57])


@pytest.fixture()
def enc(sp):
    return lambda text: sp.encode(text)


def test_two_demo_classification_episode_exact_ids(enc):
    demos = [Demo(A, "happy"), Demo(B, "sad")]
    p = build_episode_prompt(enc, demos, Q, instruction=classification_instruction(["sad", "happy", "sad"]))
    expected = ([BOS] + INSTR
                + INPUT + [5000, 5001] + OUTPUT + HAPPY
                + INPUT + [6000, 6001] + OUTPUT + SAD
                + INPUT + [7000, 7001] + OUTPUT)
    assert p.ids == expected
    assert p.prefix_len == len(expected) - len(INPUT + [7000, 7001] + OUTPUT)
    assert p.query == INPUT + [7000, 7001] + OUTPUT
    assert p.demo_lens == [len(INPUT) + 2 + len(OUTPUT) + 1] * 2
    assert p.header_len == 1 + len(INSTR)


def test_instruction_text_and_no_induction(enc):
    assert classification_instruction(["sad", "happy", "sad"]) == (
        "For each of the following input output pairs, output is one of ['happy' or 'sad']\n")
    p = build_episode_prompt(enc, [Demo(A, "happy")], Q)
    assert p.ids[:1 + len(INPUT)] == [BOS] + INPUT  # induction 0: the prefix is just [BOS]


def test_all_layers_major_and_interleaved(enc):
    p = build_episode_prompt(enc, [Demo(A, "happy")], Q, layers="all", layout="major")
    assert p.ids[1:1 + len(INPUT) + 14] == INPUT + [5000, 5001, 10, 11, 12, 13, 0, 1, 2, 3, 4, 5, 6, 7]
    inter = audio_span(A, "interleaved", "all")
    assert inter == [5000, 10, 11, 0, 1, 2, 3, 5001, 12, 13, 4, 5, 6, 7]
    assert audio_span(A, "interleaved", "semantic") == [5000, 5001]


@pytest.mark.parametrize("layout", ["major", "interleaved"])
@pytest.mark.parametrize("layers", ["all", "semantic"])
def test_split_inverts_span_and_schedule_labels_layers(layout, layers):
    rng = np.random.default_rng(0)
    g = 3
    a = AudioTokens(*(rng.integers(0, 32000, n * g).tolist() for n in (1, 2, 4)))
    span = audio_span(a, layout, layers)
    sched = span_layer_schedule(g, layout, layers)
    assert len(span) == len(sched)
    back = split_audio_span(span, layout, layers, g)
    assert list(back.l1) == list(a.l1)
    if layers == "all":
        assert (list(back.l2), list(back.l3)) == (list(a.l2), list(a.l3))
        assert [sched.count(k) for k in (1, 2, 3)] == [g, 2 * g, 4 * g]
        for tok, layer in zip(span, sched):  # every position's layer is where the id came from
            assert tok in {1: a.l1, 2: a.l2, 3: a.l3}[layer]
    with pytest.raises(ValueError, match="expected"):
        split_audio_span(span[:-1], layout, layers, g)


def test_generation_answers_repeats_and_text_inputs(enc):
    tts = [Demo("an audio of 3", A), Demo("an audio of 1", B)]
    p = build_episode_prompt(enc, tts, "an audio of (1+1)", instruction="Instruction: x\n",
                             layers="all", repeats=3)
    d0 = enc("###\nInput: an audio of 3\nOutput: ") + audio_span(A)
    d1 = enc("###\nInput: an audio of 1\nOutput: ") + audio_span(B)
    header = [BOS] + enc("Instruction: x\n")
    assert p.ids == header + (d0 + d1) * 3 + enc("###\nInput: an audio of (1+1)\nOutput: ")
    assert p.prefix_len == len(header) + 3 * len(d0 + d1)
    assert p.demo_lens == [len(d0), len(d1)] and p.repeats == 3


def test_overflow_error_says_how_many_demos_fit(enc):
    demos = [Demo(A, "happy"), Demo(B, "sad")] * 5
    full = build_episode_prompt(enc, demos, Q)
    k = max_demos_that_fit(enc, demos, Q, n_ctx=len(full.ids) - 1, reserve=0)
    assert k == 9
    assert len(build_episode_prompt(enc, demos[:k], Q).ids) <= len(full.ids) - 1
    with pytest.raises(ContextOverflowError) as e:
        build_episode_prompt(enc, demos, Q, n_ctx=100, reserve=16)
    msg = str(e.value)
    fit = max_demos_that_fit(enc, demos, Q, n_ctx=100, reserve=16)
    assert f"{len(full.ids)} tokens" in msg and "100" in msg and f"only {fit} of the 10" in msg
    assert e.value.n_tokens == len(full.ids) + 16 and e.value.n_ctx == 100
    assert 0 < fit < 10 and len(build_episode_prompt(enc, demos[:fit], Q).ids) + 16 <= 100
    assert len(build_episode_prompt(enc, demos[:fit + 1], Q).ids) + 16 > 100


def test_label_step_masks_follow_official_table(enc):
    masks = label_step_masks(enc, ["sad", "happy", "dog barking"], n_vocab=32000, eos_id=2, n_steps=5)
    cands = {tuple(enc(c)) for c in ("sad", "happy", "dog barking")}
    for j, m in enumerate(masks):
        want = {(list(c) + [2])[j] for c in cands if j < len(c) + 1} or {0}
        assert set(np.flatnonzero(m).tolist()) == want


def test_bad_audio_and_modes_rejected(enc):
    with pytest.raises(ValueError, match="g, 2g, 4g"):
        build_episode_prompt(enc, [], AudioTokens([1, 2], [3], []), layers="all")
    with pytest.raises(ValueError, match="layout"):
        build_episode_prompt(enc, [], Q, layout="zigzag")
    with pytest.raises(ValueError, match="empty"):
        audio_span(AudioTokens([]), "major", "semantic")


def test_tokens_per_group_come_from_the_bundle_strides():
    from runtime.prompt import tokens_per_group

    assert tokens_per_group((4, 2, 1)) == (1, 2, 4)
    per = tokens_per_group((2, 1, 1))  # another codec: 1, 2, 2 tokens per group
    a = AudioTokens([1, 2], [3, 4, 5, 6], [7, 8, 9, 10])
    assert span_layer_schedule(2, "interleaved", "all", per) == [1, 2, 2, 3, 3] * 2
    assert audio_span(a, "interleaved", "all", per) == [1, 3, 4, 7, 8, 2, 5, 6, 9, 10]
    assert split_audio_span(audio_span(a, "major", "all", per), "major", "all", 2, per) == a
    with pytest.raises(ValueError, match="1g, 2g, 4g"):
        audio_span(a, "major", "all")  # the default (4, 2, 1) layout does not fit these lengths
    with pytest.raises(ValueError, match="three codec layers"):
        tokens_per_group((4, 1))
