"""The generic Registry and the four registries built on it."""

from __future__ import annotations

import pickle

import pytest

from peirce.registry import DuplicateNameError, Registry, UnknownNameError, import_modules


def _fn_a():
    return "a"


def _fn_b():
    return "b"


def test_get_returns_what_was_registered_and_names_are_sorted():
    reg: Registry[object] = Registry("widget")
    for name in ("gamma", "alpha", "beta"):
        reg.register(name)(_fn_a if name != "beta" else _fn_b)
    assert reg.names() == ["alpha", "beta", "gamma"]
    assert reg.get("beta") is _fn_b and reg.get("alpha") is _fn_a
    assert "gamma" in reg and "delta" not in reg


def test_a_duplicate_name_is_refused_naming_both_objects():
    reg: Registry[object] = Registry("widget")
    reg.register("x")(_fn_a)
    reg.register("x")(_fn_a)  # the same object again (a module imported twice) is fine
    with pytest.raises(DuplicateNameError) as exc:
        reg.register("x")(_fn_b)
    msg = str(exc.value)
    assert "widget 'x'" in msg and f"{__name__}._fn_a" in msg and f"{__name__}._fn_b" in msg
    assert isinstance(exc.value, ValueError) and reg.get("x") is _fn_a


def test_unknown_name_names_kind_name_valid_names_and_the_closest():
    reg: Registry[object] = Registry("widget")
    reg.register("deduction")(_fn_a)
    reg.register("induction")(_fn_b)
    with pytest.raises(UnknownNameError) as exc:
        reg.get("dedcution")
    assert str(exc.value) == "unknown widget 'dedcution'; valid: deduction, induction; did you mean 'deduction'?"
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, ValueError)
    assert (exc.value.kind, exc.value.name, exc.value.known) == ("widget", "dedcution", ("deduction", "induction"))
    with pytest.raises(UnknownNameError) as exc:
        reg.get("zzz")
    assert str(exc.value) == "unknown widget 'zzz'; valid: deduction, induction"  # nothing close: no hint


def test_an_empty_registry_and_a_huge_name_give_short_messages():
    reg: Registry[object] = Registry("widget")
    with pytest.raises(UnknownNameError, match=r"valid: \(none\)$"):
        reg.get("x")
    with pytest.raises(UnknownNameError) as exc:
        reg.get("x" * 1_000_000)
    assert len(str(exc.value)) < 150 and "(1000000 chars)" in str(exc.value)


def test_the_error_class_is_the_registrys_and_survives_pickling():
    class UnknownWidgetError(UnknownNameError):
        pass

    reg: Registry[object] = Registry("widget", error=UnknownWidgetError)
    reg.register("a")(_fn_a)
    with pytest.raises(UnknownWidgetError) as exc:
        reg.get("b")
    err = UnknownNameError("widget", "b", ["a"])
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is UnknownNameError and str(back) == str(err) and back.known == ("a",)
    assert str(exc.value) == str(err)


def test_the_loader_runs_once_on_the_first_miss_or_names():
    calls = []

    def load() -> None:
        calls.append(1)
        reg.register("builtin")(_fn_b)

    reg: Registry[object] = Registry("widget", loader=load)
    reg.register("early")(_fn_a)
    assert reg.get("early") is _fn_a and calls == []  # a hit needs no loading
    assert reg.get("builtin") is _fn_b and calls == [1]
    assert reg.names() == ["builtin", "early"]
    with pytest.raises(UnknownNameError):
        reg.get("missing")
    assert calls == [1]


def test_a_failed_loader_is_retried_and_its_error_raised():
    attempts = []

    def load() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("first import broke")
        reg.register("ok")(_fn_a)

    reg: Registry[object] = Registry("widget", loader=load)
    with pytest.raises(ImportError, match="first import broke"):
        reg.names()
    assert reg.names() == ["ok"] and len(attempts) == 2


def test_import_modules_skips_missing_modules_but_not_missing_dependencies(tmp_path, monkeypatch):
    (tmp_path / "regtest_broken.py").write_text("import regtest_no_such_dependency\n")
    (tmp_path / "regtest_fine.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_modules("regtest_not_written_yet", "regtest_fine")()
    import regtest_fine

    assert regtest_fine.LOADED
    with pytest.raises(ModuleNotFoundError, match="regtest_no_such_dependency"):
        import_modules("regtest_broken")()


# ---------------------------------------------------------------- the project's registries


def _registries():
    from peirce.learner.advantages import ADVANTAGES, UnknownAlgorithmError, get_advantage
    from peirce.learner.losses import POLICY_LOSSES, get_policy_loss
    from peirce.rewards.registry import REWARDS, UnknownRewardError, get_reward
    from peirce.tasks.base import FAMILIES, UnknownTaskError, get_family

    return [
        (ADVANTAGES, get_advantage, UnknownAlgorithmError, "advantage estimator", "grpo"),
        (POLICY_LOSSES, get_policy_loss, UnknownAlgorithmError, "policy loss", "ppo_clip"),
        (REWARDS, get_reward, UnknownRewardError, "reward", "maa"),
        (FAMILIES, get_family, UnknownTaskError, "task family", "deduction"),
    ]


@pytest.mark.parametrize("index", range(4), ids=["advantage", "policy_loss", "reward", "family"])
def test_each_project_registry_fails_the_same_way(index):
    reg, get, error, kind, known_name = _registries()[index]
    assert isinstance(reg, Registry) and reg.kind == kind and known_name in reg.names()
    assert issubclass(error, UnknownNameError)
    typo = known_name[:-1] + "x"
    with pytest.raises(error) as exc:
        get(typo)
    assert str(exc.value).startswith(f"unknown {kind} {typo!r}; valid: ")
    assert str(exc.value).endswith(f"did you mean {known_name!r}?")


def test_config_checks_give_the_registry_message():
    from peirce.config import registries

    with pytest.raises(UnknownNameError) as exc:
        registries.check_reward("maaa")
    assert "unknown reward 'maaa'; valid: auto, " in str(exc.value) and "did you mean 'maa'?" in str(exc.value)
    with pytest.raises(UnknownNameError, match="unknown task family 'dedcution'; valid: .*did you mean 'deduction'"):
        registries.check_families(["deduction", "dedcution"])
    with pytest.raises(UnknownNameError, match="did you mean 'grpo'"):
        registries.check_advantage("grpx")
    assert registries.check_families(["deduction"]) == ["deduction"] and registries.check_reward("auto") == "auto"
