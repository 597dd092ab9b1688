"""Recipes outside the product packages (sherpa-onnx style): dataset preparation and test-model builders.

    python -m scripts.make_demos   demonstration sets / labelled views from ../shared/data
    python -m scripts.tiny_llm     tiny real LLaMA GGUFs (real vocabulary, seeded weights) for tests and demos
"""
