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


def test_error_names_source_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: nope\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Example, path)
