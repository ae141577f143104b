from dataclasses import dataclass

import pytest

from ddbench.core import registry
from ddbench.core.config import config_to_dict, parse_overrides, resolve_config
from ddbench.core.errors import ConfigError


def test_builtin_plugins_are_registered_through_entry_points():
    assert "random" in registry.names("methods")
    assert {"digits", "cifar10", "cifar100", "woof", "nette", "imagenet100", "imagenet1k"} <= set(registry.names("datasets"))
    assert registry.load_method("random").name == "random"


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(ConfigError) as error:
        registry.load_method("randon")
    message = str(error.value)
    assert "Did you mean 'random'?" in message and "Known methods:" in message and "random" in message


def test_unknown_kind_is_an_error():
    with pytest.raises(ConfigError, match="unknown plugin kind"):
        registry.names("students")


@dataclass
class ToyConfig:
    lr: float = 0.1
    epochs: int = 3
    amp: bool = False
    betas: tuple[float, ...] = (0.9, 0.999)
    name: str | None = None


def test_overrides_are_coerced_to_field_types_and_layered_in_order():
    config = resolve_config(ToyConfig, {"epochs": 5}, parse_overrides(["lr=0.5", "amp=true", "betas=0.1,5,5", "name=none"]))
    assert config == ToyConfig(lr=0.5, epochs=5, amp=True, betas=(0.1, 5.0, 5.0), name=None)
    assert config_to_dict(config)["betas"] == [0.1, 5.0, 5.0]


def test_unknown_config_key_names_valid_keys_and_suggests():
    with pytest.raises(ConfigError, match=r"no key 'epoch' \(did you mean 'epochs'\?\).*valid keys"):
        resolve_config(ToyConfig, {"epoch": "3"})


def test_bad_value_and_bad_pair_are_errors():
    with pytest.raises(ConfigError, match="cannot read 'abc'"):
        resolve_config(ToyConfig, {"epochs": "abc"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
