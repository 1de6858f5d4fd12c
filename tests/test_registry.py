import importlib
import sys
import textwrap

import pytest

from vcap.common.registry import Registry, registry


def test_register_and_get_every_kind():
    r = Registry()
    for kind in ("model", "builder", "processor", "task", "runner", "lr_scheduler"):
        cls = type(f"My{kind}", (), {})
        getattr(r, f"register_{kind}")(f"my_{kind}")(cls)
        assert getattr(r, f"get_{kind}_class")(f"my_{kind}") is cls
        assert r.list(kind) == [f"my_{kind}"]


def test_unknown_name_names_kind_closest_and_list_command():
    with pytest.raises(KeyError) as e:
        registry.get_model_class("blip2_op")
    msg = e.value.args[0]
    assert "no model named 'blip2_op'" in msg
    assert "'blip2_opt'" in msg
    assert "vcap list models" in msg


def test_unknown_name_with_no_close_match():
    with pytest.raises(KeyError) as e:
        registry.get_task_class("zzzzzz")
    assert "Did you mean" not in e.value.args[0] and "vcap list tasks" in e.value.args[0]


def test_closest_names_at_most_three():
    r = Registry()
    for n in ("model_a", "model_b", "model_c", "model_d"):
        r.register_model(n)(type(n, (), {}))
    msg = pytest.raises(KeyError, r.get_model_class, "model_").value.args[0]
    assert msg.count("'model_") == 1 + 3  # the name itself and three suggestions


def test_duplicate_name_names_both_definitions():
    r = Registry()

    class First:
        pass

    class Second:
        pass

    r.register_model("dup")(First)
    with pytest.raises(ValueError) as e:
        r.register_model("dup")(Second)
    msg = str(e.value)
    assert "test_registry.test_duplicate_name_names_both_definitions.<locals>.First" in msg
    assert "test_registry.test_duplicate_name_names_both_definitions.<locals>.Second" in msg


def test_reimporting_a_module_reregisters_without_error(tmp_path, monkeypatch):
    (tmp_path / "reimported_model.py").write_text(textwrap.dedent("""
        from vcap.common.registry import registry

        @registry.register_model("reimported_model")
        class M:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("reimported_model")
    first = registry.get_model_class("reimported_model")
    importlib.reload(mod)  # a new class object with the same definition
    assert registry.get_model_class("reimported_model") is not first
    registry.unregister("model", "reimported_model")
    sys.modules.pop("reimported_model")
