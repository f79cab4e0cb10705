"""The YAML loader on its own: what it accepts, how it reports lines, and where it stops."""

from __future__ import annotations

import pytest
import yaml

from canaryctl.api import yaml_loader
from canaryctl.api.yaml_loader import MAX_ALIAS_NODES, MAX_DEPTH, YamlError, load_documents, load_one


@pytest.fixture(params=["libyaml", "python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both event sources: libyaml's parser where PyYAML has it, PyYAML's own otherwise."""
    if request.param == "python":
        monkeypatch.setattr(yaml_loader, "_Loader", yaml_loader._PythonLoader)
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    return str(request.param)


def test_documents_keep_their_index_and_the_lines_of_their_fields(loader: str) -> None:
    text = "---\na: 1\n---\nkind: Canary\nspec:\n  list:\n    - x\n    - {y: 2}\n"
    first, second = load_documents(text)
    assert (first.index, first.line, first.body) == (1, 2, {"a": 1})
    assert (second.index, second.line) == (2, 4)
    assert second.line_of(("spec", "list", 1, "y")) == 8
    assert second.line_of(("spec", "list", 0)) == 7
    assert second.line_of(("spec", "missing", "deeper")) == 5  # nearest written ancestor


def test_plain_yaml_reads_as_pyyaml_reads_it() -> None:
    text = "a: [1, 2.5, true, null, ~, 'x', 0x10, 1_000]\nb: {c: d}\n"
    assert load_one(text) == yaml.safe_load(text)


def test_keys_are_strings_and_timestamps_stay_text_as_kubernetes_reads_them() -> None:
    assert load_one("1: a\ntrue: b\nwhen: 2024-01-01\n") == {"1": "a", "true": "b", "when": "2024-01-01"}


def test_merge_keys_and_aliases_are_copied_not_shared() -> None:
    body = load_one("base: &b {x: 1, y: [1]}\nc:\n  <<: *b\n  y: [3]\nd: *b\n")
    assert body["c"] == {"x": 1, "y": [3]}
    body["d"]["y"].append(2)
    assert body["base"]["y"] == [1]  # editing one copy (as convert does) leaves the others alone


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
        ("a: !!python/object/apply:os.system [id]\n", 1, "unsupported tag"),
        ("a: !custom x\n", 1, "unsupported tag !custom"),
        ("a: .nan\n", 1, ".nan is not a number JSON can carry"),
        ("a: -.inf\n", 1, "is not a number JSON can carry"),
        ("? [1]\n: 2\n", 1, "a mapping key must be a scalar"),
        ("a: &x [*x]\n", 1, f"nesting deeper than {MAX_DEPTH} levels"),
        ("a: *nowhere\n", 1, "found undefined alias"),
        ("a: [1, 2\n", 2, "expected ','"),
        ("a: " + "[" * 2000 + "]" * 2000, 1, "nesting"),
        ("a: 1" + "0" * 5000 + "\n", 1, "integer"),
    ],
)
def test_refusals_name_the_line(loader: str, text: str, line: int, message: str) -> None:
    with pytest.raises(YamlError) as caught:
        list(load_documents(text))
    assert caught.value.line == line
    assert message in caught.value.message


def test_alias_budget_counts_copied_nodes(loader: str) -> None:
    ten = "[" + ",".join(["x"] * 9) + "]"
    uses = MAX_ALIAS_NODES // 10
    fits = "a: &a " + ten + "\nb: [" + ",".join(["*a"] * uses) + "]\n"
    assert len(load_one(fits)["b"]) == uses
    over = "a: &a " + ten + "\nb: [" + ",".join(["*a"] * (uses + 1)) + "]\n"
    with pytest.raises(YamlError, match="aliases expand to more than"):
        load_one(over)


def test_documents_before_an_error_are_still_read() -> None:
    documents = load_documents("a: 1\n---\nb: [\n")
    assert next(documents).body == {"a": 1}
    with pytest.raises(YamlError):
        next(documents)


def test_load_one_refuses_a_second_document() -> None:
    with pytest.raises(YamlError, match="expected one YAML document"):
        load_one("a: 1\n---\nb: 2\n")
    assert load_one("") is None
