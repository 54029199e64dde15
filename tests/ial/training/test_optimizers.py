"""The optimizers the DeepSpeed JSONs build: the authors' (per group) and Sound of Pixels'."""

from __future__ import annotations

import pytest

from ial.config import ConfigError
from ial.training.config import TrainConfig, deepspeed_configs, load_train_config


@pytest.fixture(scope="module")
def deepspeed():
    from ial.training.engines import import_deepspeed, single_process_env

    single_process_env()
    ds = import_deepspeed("gloo")
    ds.init_distributed(dist_backend="gloo")
    return ds


def _engines(deepspeed, train_yaml: str, *overrides: str):
    from ial.method.objective import IALMethod
    from ial.training.config import method_config, model_config
    from ial.training.engines import build_engines

    cfg = load_train_config(train_yaml, list(overrides))
    method = IALMethod(model_config(cfg), method_config(cfg))
    ds_sep, ds_critic = deepspeed_configs(cfg, world_size=1)
    sep, critic, _ = build_engines(method, ds_sep, ds_critic, deepspeed)
    return method, sep, critic


def _groups(engine):
    return {g.get("name", "critic"): (g["lr"], tuple(g.get("betas") or ()), g["weight_decay"],
                                      g.get("momentum")) for g in engine.optimizer.param_groups}


@pytest.mark.parametrize("json", ["configs/deepspeed/cpu.json",
                                  "configs/deepspeed/gpu_bf16_zero2.json"])
def test_the_authors_optimizers_per_group(deepspeed, json):
    method, sep, critic = _engines(deepspeed, "configs/train/demo.yaml", f"deepspeed={json}",
                                   "backend=gloo")
    assert _groups(sep) == {"visual": (1e-3, (0.9, 0.999), 0.0, None),   # v_lr
                            "audio": (1e-4, (0.9, 0.999), 0.0, None)}    # a_lr, no decay
    assert _groups(critic) == {"critic": (1e-4, (0.0, 0.9), 1e-3, None)}
    assert not sep.gradient_clipping() and not critic.gradient_clipping()
    visual = {id(p) for p in method.separator.visual_head.parameters()}
    (vgroup,) = [g for g in sep.optimizer.param_groups if g.get("name") == "visual"]
    assert visual <= {id(p) for p in vgroup["params"]} or sep.zero_optimization()


def test_sound_of_pixels_sgd(deepspeed):
    _, sep, _ = _engines(deepspeed, "configs/train/demo.yaml", "model=configs/model/sop_demo.yaml",
                         "method=configs/method/sop.yaml", "deepspeed=configs/deepspeed/sop.json")
    assert type(sep.optimizer).__name__ == "SGD"
    assert _groups(sep) == {"synthesizer": (1e-3, (), 1e-4, 0.9), "frame_fc": (1e-3, (), 1e-4, 0.9),
                            "sound": (1e-3, (), 1e-4, 0.9)}  # the trunk is frozen: no group


def test_a_param_group_the_model_does_not_have_is_refused(deepspeed, tmp_path):
    import json

    bad = json.loads(open("configs/deepspeed/cpu.json").read())
    bad["param_groups"] = {"vision": {"lr": 1e-3}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"param_groups \['vision'\].*it has: visual, audio"):
        _engines(deepspeed, "configs/train/demo.yaml", f"deepspeed={path}")


def test_infonce_that_would_keep_fewer_than_two_negatives_is_refused():
    with pytest.raises(ConfigError) as info:  # the old default: 4 mixtures, drop 6 of 7
        load_train_config("configs/train/default.yaml", ["batch_size=8"])
    msg = str(info.value)
    assert "method.drop_hardest" in msg and "batch_size 8" in msg and "leaves 1 of 7" in msg
    assert load_train_config("configs/train/default.yaml").batch_size == 16  # 9 negatives
    # without L_av there is nothing to check
    assert load_train_config("configs/train/default.yaml",
                             ["batch_size=8", "method.lambda_av=0"]).batch_size == 8
    TrainConfig(batch_size=4)  # plain construction is not validated; loading is


def test_a_warm_up_schedule_starts_without_deepspeed_s_spurious_warning(deepspeed):
    import logging

    from deepspeed.utils import logger

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # sees what passes the logger's own filters
    logger.addHandler(handler)
    try:
        _, sep, _ = _engines(deepspeed, "configs/train/demo.yaml", "backend=gloo",
                             "deepspeed=configs/deepspeed/realistic.json")
    finally:
        logger.removeHandler(handler)
    assert type(sep.lr_scheduler).__name__ == "WarmupLR"
    assert not [r.getMessage() for r in records if "scheduler" in r.getMessage()]


def _json_with(tmp_path, base: str, **changes) -> str:
    import json

    cfg = json.loads(open(base).read())
    cfg.update(changes)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _warmup(peak: float) -> dict:
    return {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": peak,
                                           "warmup_num_steps": 4, "warmup_type": "linear"}}


def test_the_critic_trains_at_its_own_lr_not_the_separator_s_schedule(deepspeed, tmp_path):
    # a separator warm-up to 1e-3 and a critic that names 1e-4: DeepSpeed's WarmupLR would set
    # the critic's lr to 1e-3 too, if the critic inherited it (as realistic.json's once did)
    path = _json_with(tmp_path, "configs/deepspeed/cpu.json", scheduler=_warmup(1e-3),
                      optimizer={"type": "Adam", "params": {"lr": 1e-3}},
                      param_groups={"visual": {"lr": 1e-3}})
    _, sep, critic = _engines(deepspeed, "configs/train/demo.yaml", f"deepspeed={path}")
    for _ in range(6):
        sep.lr_scheduler.step()
    assert critic.lr_scheduler is None
    assert _groups(critic)["critic"][0] == 1e-4
    assert {g["lr"] for g in sep.optimizer.param_groups} == {1e-3}


def test_the_realistic_critic_warms_up_to_1e_3(deepspeed):
    _, _, critic = _engines(deepspeed, "configs/train/demo.yaml", "backend=gloo",
                            "deepspeed=configs/deepspeed/realistic.json")
    assert type(critic.lr_scheduler).__name__ == "WarmupLR"
    for _ in range(60):
        critic.lr_scheduler.step()
    assert _groups(critic) == {"critic": (1e-3, (0.0, 0.9), 1e-3, None)}


@pytest.mark.parametrize("changes, named", [
    ({"scheduler": _warmup(1e-3), "param_groups": {"visual": {"lr": 1e-4}},
      "optimizer": {"type": "Adam", "params": {"lr": 1e-3}}},
     "its scheduler WarmupLR sets every parameter group's lr to its warmup_max_lr 0.001, so "
     "param_groups.visual.lr 0.0001 would never be used"),
    ({"critic": {"optimizer": {"params": {"lr": 1e-4}}, "scheduler": _warmup(3e-3)}},
     "its critic.scheduler WarmupLR .* warmup_max_lr 0.003, so critic.optimizer.params.lr 0.0001"),
])
def test_a_scheduler_that_would_replace_a_named_lr_is_refused(tmp_path, changes, named):
    path = _json_with(tmp_path, "configs/deepspeed/cpu.json", **changes)
    with pytest.raises(ConfigError, match=named) as info:
        deepspeed_configs(TrainConfig(deepspeed=path), world_size=1)
    assert str(info.value).startswith("config field 'deepspeed': ") and path in str(info.value)


def test_a_nested_set_changes_one_value_of_the_deepspeed_json_the_config_names(deepspeed,
                                                                                tmp_path):
    # demo.yaml names cpu.json; the overrides apply on top of it, the rest of the file stays
    _, sep, critic = _engines(deepspeed, "configs/train/demo.yaml", "backend=gloo",
                              "deepspeed.optimizer.params.lr=3e-4",
                              "deepspeed.critic.optimizer.params.betas=[0.5,0.9]")
    assert {k: v[:2] for k, v in _groups(sep).items()} == {
        "visual": (1e-3, (0.9, 0.999)), "audio": (3e-4, (0.9, 0.999))}
    assert _groups(critic) == {"critic": (1e-4, (0.5, 0.9), 1e-3, None)}
    cfg = load_train_config("configs/train/demo.yaml", ["deepspeed.optimizer.params.lr=3e-4"])
    saved = tmp_path / "config.yaml"  # the saved config holds the merged mapping, and loads
    from ial.config import save_config

    save_config(cfg, str(saved))
    assert load_train_config(str(saved)).deepspeed == cfg.deepspeed
    assert cfg.deepspeed["zero_optimization"] == {"stage": 0}
    inline = tmp_path / "inline.yaml"  # in a config file, a mapping is the whole JSON
    inline.write_text("deepspeed: {optimizer: {type: Adam}, scheduler: {type: WarmupLR}}\n")
    assert load_train_config(str(inline)).deepspeed == {"optimizer": {"type": "Adam"},
                                                        "scheduler": {"type": "WarmupLR"}}
    with pytest.raises(ConfigError, match=r"'deepspeed.optimzer': not in configs/deepspeed/cpu"
                                          r".json \(it has: .*\) \(from --set deepspeed.optimzer"):
        load_train_config("configs/train/demo.yaml", ["deepspeed.optimzer.params.lr=1"])
    with pytest.raises(ConfigError, match=r"'deepspeed.optimizer': is a mapping in .*: set one "
                                          r"of its keys \(type, params\) \(from --set"):
        load_train_config("configs/train/demo.yaml", ["deepspeed.optimizer=SGD"])
    with pytest.raises(ConfigError, match=r"deepspeed.optimizer.params.lr': expected a number"):
        load_train_config("configs/train/demo.yaml", ["deepspeed.optimizer.params.lr=fast"])
    with pytest.raises(ConfigError, match=r"JSON config not found: gone.json \(from --set deep"):
        load_train_config("configs/train/demo.yaml", ["deepspeed=gone.json",
                                                      "deepspeed.optimizer.params.lr=1"])
