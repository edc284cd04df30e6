"""Hostile YAML is refused with one clear error, fast, before anything walks it."""

import pytest
import yaml

from peirce.config import ConfigError, TrainConfig, load_config
from peirce.config.loader import parse_override
from peirce.config.safe_yaml import MAX_BYTES, MAX_NODES, expanded_size, load_yaml

pytestmark = pytest.mark.timeout(60)  # the unbounded versions of these take hours or all memory


def billion_laughs(levels: int = 10, fan: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())  # 9**10 ~ 3.5e9 nodes when expanded, 1 KB on disk
    with pytest.raises(ConfigError, match=rf"bomb.yaml: YAML expands to more than {MAX_NODES} nodes"):
        load_config(TrainConfig, path)


def test_alias_bomb_in_an_override_is_refused():
    with pytest.raises(ConfigError, match=r"override 'x': YAML expands"):
        parse_override("x=" + billion_laughs().replace("\n", ", ").join("{}"))


def test_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match="recursive alias"):
        load_yaml("a: &a [1, *a]\n")


def test_ordinary_aliases_and_merge_keys_still_work():
    data = load_yaml("base: &b {lr: 1.0e-5, micro_batch_size: 2}\nlearner:\n  <<: *b\n  lr: 2.0e-5\nother: *b\n")
    assert data["learner"] == {"lr": 2e-5, "micro_batch_size": 2} and data["other"]["micro_batch_size"] == 2


def test_size_counts_each_alias_use():
    # map + key x + [1, 2, 3] (4) + key y + [*a, *a] (1 + 4 + 4) = 16, though only 11 nodes are composed
    assert expanded_size(yaml.compose("x: &a [1, 2, 3]\ny: [*a, *a]\n")) == 16
    items = ", ".join(["1"] * (MAX_NODES + 10))  # no alias at all: plain size counts too
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml(f"k: [{items}]")


def test_deep_nesting_too_large_and_binary_files_are_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml: YAML nested too deeply"):
        load_config(TrainConfig, deep)
    big = tmp_path / "big.yaml"
    big.write_text("a: '" + "x" * (MAX_BYTES + 1) + "'\n")
    with pytest.raises(ConfigError, match=rf"big.yaml: \d+ bytes is more than the {MAX_BYTES}-byte limit"):
        load_config(TrainConfig, big)
    binary = tmp_path / "model.safetensors"
    binary.write_bytes(b"\x80\x00\xff" * 100)
    with pytest.raises(ConfigError, match=r"model.safetensors: not UTF-8 text \(invalid byte at offset 0\)"):
        load_config(TrainConfig, binary)


def test_python_tags_are_not_constructed():
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("a: !!python/object/apply:os.system ['echo pwned']\n")
