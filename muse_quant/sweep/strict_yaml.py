"""YAML read strictly: a key given twice in one mapping is an error, not the last one winning.

PyYAML's ``safe_load`` keeps the last of repeated keys silently, so ``precisions:`` written twice,
or ``{name: nf4, emulated: true, emulated: false}``, would run a plan other than the one read.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping that gives one key twice (its ``problem_mark`` is the second one)."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: overridable keys
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):  # unhashable: PyYAML's own error says so
                break
            if key in seen:
                raise DuplicateKeyError(
                    problem=f"key {key!r} is given twice in one mapping (line "
                    f"{seen[key].start_mark.line + 1} and here); keep one",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_strict(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing a key repeated in any mapping."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
