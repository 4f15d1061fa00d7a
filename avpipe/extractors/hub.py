"""Hugging Face hub models in the weights registry: named, listed, fetched once, checked.

Why: the seed papers' encoders (HuBERT, wav2vec 2.0, BERT, RoBERTa, Swin) download from the
Hugging Face hub at first use. Registering each under a short name makes them visible in
``avpipe models list``, fetchable ahead of time (``avpipe models fetch NAME``), replaceable by a
local folder (``--weights NAME=DIR``), and fingerprinted by the checksum of their files. Offline
without a cached copy, resolving one fails with one message saying so — never random weights.
"""
from __future__ import annotations

from pathlib import Path

from avpipe.extractors.weights import WeightSpec, WeightsMissingError, hf_offline, register_weights

PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]


def _snapshot(repo: str, revision: str | None, local_only: bool) -> Path:
    """The repo's configs, tokenizer files and safetensors; ``pytorch_model.bin`` only for a repo
    that has no safetensors (transformers reads it with ``weights_only=True``)."""
    from huggingface_hub import snapshot_download

    d = Path(snapshot_download(repo, revision=revision, local_files_only=local_only, allow_patterns=PATTERNS))
    if not any(d.glob("*.safetensors")):
        d = Path(snapshot_download(repo, revision=revision, local_files_only=local_only,
                                   allow_patterns=PATTERNS + ["pytorch_model.bin"]))
        if not any(d.glob("*.safetensors")) and not (d / "pytorch_model.bin").exists():
            raise FileNotFoundError(f"{repo}: no weights file (model.safetensors or pytorch_model.bin)")
    return d


def hub_spec(name: str, repo: str, description: str, *, revision: str | None = None) -> WeightSpec:
    """Register hub repo ``repo`` as weights ``name`` (safetensors and configs only: no pickles)."""

    def locate() -> Path | None:
        try:
            return _snapshot(repo, revision, True)
        except Exception:  # noqa: BLE001 - not in the cache (or no huggingface_hub): not present
            return None

    def obtain() -> Path:
        if hf_offline():
            raise WeightsMissingError(f"{repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        try:
            return _snapshot(repo, revision, False)
        except Exception as e:  # noqa: BLE001
            raise WeightsMissingError(f"could not download {repo} from the Hugging Face hub "
                                      f"({type(e).__name__}: {str(e)[:160]})") from None

    return register_weights(WeightSpec(
        name=name, filename=repo.replace("/", "--"), source="download", url=f"https://huggingface.co/{repo}",
        description=description,
        how=(f"run `avpipe models fetch {name}` where huggingface.co is reachable (it fills the Hugging Face "
             f"cache), or pass a local folder with {repo}'s config and safetensors: --weights {name}=DIR"),
        locate=locate, obtain=obtain))


hub_spec("hubert-base-ls960", "facebook/hubert-base-ls960", "HuBERT-base, LibriSpeech 960 h (Apache-2.0); MAVEN's audio")
hub_spec("wav2vec2-base-960h", "facebook/wav2vec2-base-960h", "wav2vec 2.0 base, LibriSpeech 960 h (Apache-2.0)")
hub_spec("bert-base-uncased", "google-bert/bert-base-uncased", "BERT-base uncased (Apache-2.0); RJCMA's text")
hub_spec("roberta-base", "FacebookAI/roberta-base", "RoBERTa-base (MIT); MAVEN's text")
