"""Low-rank adapters: `data.classes`, `noisecraft finetune` (a task in the training loop, only the adapter trained,
prior preservation), the adapter in peft's layout, and adapters loaded, mixed and recorded at sampling."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from noisecraft.config import DataConfig
from noisecraft.data import load_dataset
from noisecraft.errors import UserError

from conftest import TINY
from test_text import HAS_TEXT, tiny_encoder

needs_text = pytest.mark.skipif(not HAS_TEXT, reason='the text extra is not installed: pip install -e ".[text]"')


def nines_folder(root: Path, n: int = 10, caption: str = "a nine") -> Path:
    """n real nines from the digits' train split as PNGs with metadata.jsonl captions."""
    from PIL import Image

    data = load_dataset(DataConfig(), "train")
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, img in enumerate(data.images[data.labels == 9][:n]):
        Image.fromarray(img[0].numpy()).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """A tiny text base trained without nines, and a 6-step fine-tuning of it on ten captioned nines."""
    if not HAS_TEXT:
        pytest.skip('the text extra is not installed: pip install -e ".[text]"')
    from noisecraft.cli import main

    tmp = tmp_path_factory.mktemp("lora")
    enc = tiny_encoder(tmp / "encoder")
    base = tmp / "base"
    assert main(["train", "--preset", "digits", "--out", str(base), "--steps", "4", "--no-progress", *TINY,
                 "--data.captions=on", f"--model.text_encoder={enc}", "--model.text_max_tokens=12",
                 "--model.cross_attn_resolutions=14", "--data.classes=0,1,2,3,4,5,6,7,8"]) == 0
    folder = nines_folder(tmp / "nines")
    ft = tmp / "nines-run"
    assert main(["finetune", "--checkpoint", str(base), "--data-root", str(folder), "--out", str(ft), "--steps", "6",
                 "--rank", "2", "--no-progress", "--train.batch_size=4", "--finetune.prior_images=4",
                 "--sample.steps=2", "--train.log_every=1", "--finetune.licence=CC BY-SA 3.0"]) == 0
    return base, ft, folder


def test_data_classes_keeps_only_those_classes_with_their_numbering():
    data = load_dataset(DataConfig(classes=("3", "9")), "train")
    assert set(data.labels.tolist()) == {3, 9} and len(data.class_names) == 10
    with pytest.raises(UserError, match="data.classes names x, not a class of digits"):
        load_dataset(DataConfig(classes=("x",)), "train")


@needs_text
def test_finetune_saves_an_adapter_in_peft_layout_with_its_base_recorded(lora_runs):
    from noisecraft.rundir import content_hash

    base, ft, _ = lora_runs
    adapter = ft / "adapter"
    assert {p.name for p in adapter.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                   "noisecraft_adapter.json"}
    record = json.loads((adapter / "noisecraft_adapter.json").read_text())
    base_file = Path(record["base"])
    assert record["base_sha256"] == content_hash([base_file]) and record["trigger"] == "a nine"
    assert record["licence"] == "CC BY-SA 3.0" and record["rank"] == 2
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.25 * base_file.stat().st_size
