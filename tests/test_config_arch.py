"""Each architecture owns its settings (`model.unet`, `model.dit`): configs saved with the old flat keys load into
them, old flat overrides still set them, and a setting of another architecture is one error line naming the own."""
from __future__ import annotations

import json

import pytest
from conftest import TINY_RUN

from noisecraft.config import ARCH_SETTINGS, Config, DiTConfig, UNetConfig, apply_overrides, preset
from noisecraft.errors import UserError
from noisecraft.registry import ARCHITECTURES

# The model sections of configs as runs saved them before the settings were per architecture (every field, flat).
OLD_UNET = {"arch": "unet", "base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [7],
            "head_channels": 32, "dropout": 0.0, "scale_shift": True, "patch_size": 2, "depth": 6, "mlp_ratio": 4.0,
            "pos_embed": "sincos", "conv_stem": 0, "long_skip": False, "text_encoder": None, "text_max_tokens": 32,
            "cross_attn_resolutions": [14, 7], "context_dim": None, "in_channels": 1, "image_size": 28,
            "num_classes": 10, "augment_dim": 0}
OLD_DIT = {**OLD_UNET, "arch": "dit", "base_channels": 128, "patch_size": 4, "depth": 4, "mlp_ratio": 2.0,
           "conv_stem": 32, "long_skip": True, "pos_embed": "learned"}


def _old(model: dict) -> dict:
    d = Config().to_dict()
    d["model"] = model
    return d


def test_every_architecture_has_its_settings_section():
    assert tuple(ARCH_SETTINGS) == ARCHITECTURES.names()


def test_an_old_flat_unet_config_loads_into_model_unet():
    m = Config.from_dict(_old(OLD_UNET)).model
    assert m.unet == UNetConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(7,),
                                scale_shift=True, cross_attn_resolutions=(14, 7))
    assert m.dit is None and (m.patch_size, m.head_channels, m.dropout, m.num_classes) == (2, 32, 0.0, 10)


def test_an_old_flat_dit_config_loads_into_model_dit_with_base_channels_as_its_width():
    m = Config.from_dict(_old(OLD_DIT)).model
    assert m.dit == DiTConfig(width=128, depth=4, mlp_ratio=2.0, pos_embed="learned", long_skip=True)
    assert m.unet is None and (m.patch_size, m.conv_stem) == (4, 32)


def test_a_saved_config_holds_only_the_chosen_settings_and_reloads_equal():
    for name in ("digits", "digits-dit"):
        cfg = preset(name)
        d = json.loads(json.dumps(cfg.to_dict()))
        assert [k for k in ARCH_SETTINGS if k in d["model"]] == [cfg.model.arch]
        assert Config.from_dict(d) == cfg


def test_a_key_added_later_reads_as_a_config_saved_without_it_meant():
    d = Config().to_dict()
    assert Config.from_dict(d).finetune.prior_batch == 4  # saved with it: as saved
    del d["finetune"]["prior_batch"]  # a fine-tuning saved before it: as many prior images as new ones
    assert Config.from_dict(d).finetune.prior_batch == 0


def test_an_old_flat_override_sets_the_chosen_architectures_setting():
    cfg = apply_overrides(preset("digits"), {"model.base_channels": "24", "model.attn_resolutions": ""})
    assert (cfg.model.unet.base_channels, cfg.model.unet.attn_resolutions) == (24, ())
    cfg = apply_overrides(preset("digits"), {"model.base_channels": "96", "model.depth": "2", "model.arch": "dit"})
    assert (cfg.model.dit.width, cfg.model.dit.depth, cfg.model.unet) == (96, 2, None)  # arch is set first


def test_switching_architecture_starts_from_its_default_settings():
    cfg = apply_overrides(preset("digits-dit"), {"model.arch": "unet"})
    assert cfg.model.unet == UNetConfig() and cfg.model.dit is None
    same = apply_overrides(preset("digits-dit"), {"model.arch": "dit"})
    assert same.model.dit == preset("digits-dit").model.dit  # naming the same architecture keeps its settings


@pytest.mark.parametrize("key", ["model.dit.depth", "model.depth", "model.mlp_ratio"])
def test_a_transformer_setting_on_a_unet_is_refused_naming_the_unets_settings(key):
    with pytest.raises(UserError) as e:
        apply_overrides(preset("digits"), {key: "2"})
    assert str(e.value) == (f"{key} is not a setting of model.arch=unet; its own are model.unet.{{base_channels, "
                            "channel_mult, num_res_blocks, attn_resolutions, scale_shift, cross_attn_resolutions} "
                            "(or set model.arch)")


def test_a_saved_config_with_the_other_architectures_section_is_refused():
    d = preset("digits").to_dict()
    d["model"]["dit"] = {"depth": 2}
    with pytest.raises(UserError, match=r"^model.dit.depth is not a setting of model.arch=unet; its own are "):
        Config.from_dict(d)


def test_the_cli_refuses_a_unet_setting_on_a_dit_in_one_line(cli, tmp_path):
    code, _, err = cli("train", "--preset", "digits-dit", "--out", tmp_path / "r", "--steps", 1, "--no-progress",
                       *TINY_RUN, "--model.channel_mult=1,2")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: model.channel_mult is not a setting of model.arch=dit; its own are "
                          "model.dit.{width, depth, mlp_ratio, pos_embed, long_skip}"), err
