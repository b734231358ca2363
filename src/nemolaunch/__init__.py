"""nemolaunch: run NVIDIA Nemotron 3 Ultra (and any GGUF) with llama.cpp on your own hardware."""

__version__ = "0.1.0"

#: The model nemolaunch exists for; the default everywhere a model is not named.
ULTRA_REPO = "unsloth/NVIDIA-Nemotron-3-Ultra-550B-A55B-GGUF"
#: The name the OpenAI API serves the Ultra under (llama-server --alias).
ULTRA_ALIAS = "unsloth/NVIDIA-Nemotron-3-Ultra-550B-A55B"
