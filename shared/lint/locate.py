"""Lines of a YAML document: the node a path (``("processors", 2, "sql")``) points at, and its line.

The definition is loaded twice from one text: ``yaml.safe_load`` for the data and ``yaml.compose``
for the node tree, whose nodes carry their position. A path into the data is a path into the tree.
"""

from __future__ import annotations

from typing import Any

import yaml


class Lines:
    """Maps paths of a YAML document to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        try:
            self.root: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def node(self, path: tuple[Any, ...]) -> tuple[yaml.Node | None, yaml.Node | None]:
        """(value node, key node) of ``path``, or the deepest existing ancestor's (key node may be None)."""
        node, key_node = self.root, None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                        node, key_node = v, k
                        break
                else:
                    return node, key_node
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node, key_node = node.value[part], None
            else:
                return node, key_node
        return node, key_node

    def line(self, path: tuple[Any, ...], key: bool = False) -> int | None:
        """1-based line of ``path``'s value (or of its key with ``key=True``: an unknown key's line)."""
        node, key_node = self.node(path)
        target = key_node if key and key_node is not None else node
        return None if target is None else target.start_mark.line + 1

    def text_line(self, path: tuple[Any, ...], offset_line: int) -> int | None:
        """Line of the ``offset_line``-th (1-based) line inside the string scalar at ``path`` (a
        ``|`` block starts on the line after its indicator)."""
        node, _ = self.node(path)
        if not isinstance(node, yaml.ScalarNode):
            return self.line(path)
        first = node.start_mark.line + (1 if node.style in ("|", ">") else 0)
        return first + offset_line
