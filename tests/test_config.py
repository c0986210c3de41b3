import dataclasses

import pytest

from golf.config import PRESETS, Config, GolfError, from_env, pick


def test_default_is_record_preset():
    assert from_env({}) == Config()
    assert from_env({"PRESET": "record"}) == Config()


def test_smoke_preset_changes_scale_not_pieces():
    smoke = from_env({"PRESET": "smoke"})
    assert smoke.model_dim < Config().model_dim and smoke.device == "cpu"
    assert (smoke.block, smoke.mlp_activation, smoke.codec) == (Config().block, Config().mlp_activation, Config().codec)


def test_env_overrides_parse_to_field_types():
    cfg = from_env({"PRESET": "smoke", "MODEL_DIM": "192", "MLP_MULT": "3.5", "COMPILE": "1", "RUN_ID": "x"})
    assert (cfg.model_dim, cfg.mlp_mult, cfg.compile, cfg.run_id) == (192, 3.5, True, "x")


@pytest.mark.parametrize("env, needle", [
    ({"PRESET": "tiny"}, "PRESET"),
    ({"MODEL_DIM": "big"}, "MODEL_DIM"),
    ({"COMPILE": "maybe"}, "COMPILE"),
    ({"MODEL_DIMS": "256"}, "MODEL_DIM"),
    ({"TRAIN_SEQ_LENN": "256"}, "TRAIN_SEQ_LEN"),
])
def test_bad_env_is_a_clear_error(env, needle):
    with pytest.raises(GolfError, match=needle):
        from_env(env)


def test_launcher_and_os_env_are_not_flagged():
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_PORT": "1", "HOME": "/root", "PATH": "/bin"}
    assert from_env(env) == Config()


def test_config_is_frozen_and_presets_return_configs():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().model_dim = 1
    for preset in PRESETS.values():
        assert isinstance(preset(Config()), Config)


def test_pick_names_the_setting_and_choices():
    with pytest.raises(GolfError, match=r"BLOCK='nope'.*parallel"):
        pick({"parallel": 1}, "nope", "BLOCK")
