from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from ial.config import ConfigError, from_dict, load_config, save_config, to_dict, load_yaml


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Example:
    name: str = "x"
    steps: int = 10
    mode: Literal["supervised", "unsupervised"] = "supervised"
    labels: list[str] = field(default_factory=list)
    weights: Optional[str] = None
    optim: Optim = field(default_factory=Optim)

    def validate(self):
        if self.steps <= 0:
            raise ConfigError("steps", "must be > 0")


def test_defaults_and_nested_values():
    cfg = from_dict(Example, {"steps": 3, "optim": {"lr": 1}})
    assert cfg.steps == 3 and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    "data, field_name",
    [
        ({"steps": "many"}, "steps"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"mode": "semi"}, "mode"),
        ({"labels": [1]}, "labels[0]"),
        ({"stpes": 3}, "stpes"),
        ({"steps": 0}, "steps"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
    ],
)
def test_bad_values_name_the_field(data, field_name):
    with pytest.raises(ConfigError) as info:
        from_dict(Example, data)
    assert info.value.field == field_name
    assert f"'{field_name}'" in str(info.value)


def test_yaml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.1\n")
    cfg = load_config(Example, path, ["optim.lr=3e-4", "labels=[a,b]"])
    assert cfg.steps == 5 and cfg.optim.lr == pytest.approx(3e-4) and cfg.labels == ["a", "b"]
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, str(out))
    assert from_dict(Example, load_yaml(out)) == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]


@pytest.mark.parametrize("item, field_name, says", [
    ("labels=[a,b", "labels", "not valid YAML"),
    ("name=a: b: c", "name", "not valid YAML"),
    ("=3", "", "dotted field name"),
    ("optim..lr=3", "optim..lr", "dotted field name"),
])
def test_a_malformed_override_names_itself(item, field_name, says):
    with pytest.raises(ConfigError) as info:
        load_config(Example, None, [item])
    assert info.value.field == field_name
    assert says in str(info.value) and f"(from --set {item})" in str(info.value)
    assert load_config(Example, None, ["name='a: b: c'"]).name == "a: b: c"  # quoting passes it


def test_error_names_source_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: nope\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Example, path)


@dataclass
class Inner:
    lr: float = 1.0
    depth: int = 2


def _with_sub(default_path: str):
    from ial.config import sub_config

    @dataclass
    class Run:
        name: str = "run"
        inner: object = sub_config(Inner, default_path)

    return Run


def test_nested_override_applies_on_top_of_the_file_a_config_names(tmp_path):
    inner = tmp_path / "inner.yaml"
    inner.write_text("lr: 0.5\ndepth: 7\n")
    top = tmp_path / "top.yaml"
    top.write_text(f"name: a\ninner: {inner}\n")
    Run = _with_sub(str(tmp_path / "missing.yaml"))
    cfg = load_config(Run, top, ["inner.lr=0.25"])
    # the file's depth survives: the override is merged on top of it, not instead of it
    assert isinstance(cfg.inner, Inner) and (cfg.inner.lr, cfg.inner.depth) == (0.25, 7)
    saved = tmp_path / "run" / "config.yaml"
    save_config(cfg, str(saved))
    assert load_yaml(saved)["inner"] == {"lr": 0.25, "depth": 7}  # the merged result is saved
    # a path given by an override replaces the file, later overrides apply on top of it
    other = tmp_path / "other.yaml"
    other.write_text("depth: 3\n")
    cfg = load_config(Run, top, [f"inner={other}", "inner.lr=2"])
    assert (cfg.inner.lr, cfg.inner.depth) == (2.0, 3)
    # no file given: the sub-config's default path is read, then the override
    Run = _with_sub(str(inner))
    assert (load_config(Run, None, ["inner.depth=1"]).inner.depth,
            load_config(Run, None, ["inner.depth=1"]).inner.lr) == (1, 0.5)


def test_errors_name_where_the_value_came_from(tmp_path):
    inner = tmp_path / "inner.yaml"
    inner.write_text("lr: fast\n")
    top = tmp_path / "top.yaml"
    top.write_text(f"inner: {inner}\n")
    Run = _with_sub(str(inner))
    with pytest.raises(ConfigError, match=r"'inner.lr'.*\(in .*inner.yaml\)"):
        load_config(Run, top)
    good = tmp_path / "good.yaml"
    good.write_text("lr: 1\n")
    top.write_text(f"inner: {good}\n")
    with pytest.raises(ConfigError) as info:  # a typo inside a nested field, from --set
        load_config(Run, top, ["inner.lrr=1"])
    assert info.value.field == "inner.lrr" and "(from --set inner.lrr=1)" in str(info.value)
    assert "unknown field" in str(info.value)
    with pytest.raises(ConfigError, match=r"'steps'.*\(from --steps\)"):  # from an option
        load_config(Example, top_example(tmp_path), labels={"steps": "--steps"}, steps=-3)
    with pytest.raises(ConfigError, match=r"'steps'.*\(in .*ex.yaml\)"):  # from the file
        load_config(Example, top_example(tmp_path, "steps: -1\n"))


def top_example(tmp_path, text: str = "name: x\n"):
    path = tmp_path / "ex.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("content, message", [
    ("steps: [1,\n  x: y\n", "not valid YAML: line 3"),
    ("- a\n- b\n", "must hold a mapping"),
    (b"steps: \xff\xfe\n", "not a UTF-8 text file"),
])
def test_a_bad_config_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=message) as info:
        load_config(Example, path)
    assert str(info.value).startswith(f"config file {path}:")
    with pytest.raises(ConfigError, match="not found"):
        load_config(Example, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(Example, tmp_path)


def test_a_repository_config_path_works_from_any_directory(tmp_path, monkeypatch):
    """``--config configs/...`` from outside the checkout reads the repository's file (as the
    paths inside config files are read); a file in the working directory wins; a path found
    nowhere is named as given."""
    from ial.training.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, "configs/train/demo.yaml")
    assert cfg.dataset == "demo"
    (tmp_path / "configs" / "train").mkdir(parents=True)
    (tmp_path / "configs" / "train" / "demo.yaml").write_text("dataset: mine\n")
    assert load_config(TrainConfig, "configs/train/demo.yaml").dataset == "mine"
    with pytest.raises(ConfigError, match="configs/train/nope.yaml: not found"):
        load_config(TrainConfig, "configs/train/nope.yaml")
