"""Reading the site file within bounds: its size, its kind, and how far its aliases expand.

The daemon reads the file again on SIGHUP inside its one loop, so a file that takes
minutes to read (a billion-laughs alias bomb, a multi-GB file, a FIFO nobody writes
to) would stop the loop past systemd's WatchdogSec. Everything here is refused with
a `ReadRefused` naming what is wrong, before the work grows.
"""
from __future__ import annotations

import os
import stat

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

MAX_BYTES = 1024 * 1024  # a site file is a few KB; a MiB leaves room for comments
# Values as written, and again after every alias is expanded. A real site file has a
# few hundred; reading costs per value written, and the daemon and check-config walk
# the expanded tree, so both counts are the real cost.
MAX_NODES = 100_000


class ReadRefused(Exception):
    """The file cannot be used as it is; the message says why and what would be right."""


def read_text(path: str) -> str:
    """The file's text, refusing anything but a regular file of at most MAX_BYTES.

    Checked with stat before opening, and opened non-blocking: opening a FIFO for
    reading waits for a writer, so a FIFO swapped in for the file would hang us.
    """
    status = os.stat(path)  # FileNotFoundError and other OSErrors are the caller's to word
    if not stat.S_ISREG(status.st_mode):
        raise ReadRefused("not a regular file (a directory, FIFO, socket or device); "
                          "give the path of the YAML site file itself")
    if status.st_size > MAX_BYTES:
        raise ReadRefused(f"the file is {status.st_size:,} bytes, over the limit of {MAX_BYTES:,} (1 MiB); "
                          "a site file is a few KB, so this is not the file you meant")
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(handle, "rb") as stream:
        # Re-checked on the open file: the path may have been replaced since the stat.
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ReadRefused("not a regular file; give the path of the YAML site file itself")
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ReadRefused(f"the file is over the limit of {MAX_BYTES:,} bytes (1 MiB); "
                          "a site file is a few KB, so this is not the file you meant")
    return data.decode("utf-8")


class _Bounded:
    """Refuses a key given twice in one mapping, and a document of more than MAX_NODES nodes.

    PyYAML keeps the last of two equal keys silently, so an admin who adds `image:` at
    the end of a block without seeing the one at its top would run something else than
    they read. Merge keys (`<<: *base`) are YAML's own way to repeat a block: the keys a
    mapping merges in may be given again in it, that is what overriding means.

    Nodes are counted as they are composed, so a 1 MiB file of half a million values is
    refused after the first MAX_NODES, not after building all of them.
    """

    composed = 0
    limit = MAX_NODES

    def compose_node(self, parent, index):
        self.composed += 1
        if self.composed > self.limit:
            raise ExpansionRefused(f"it holds more than {self.limit:,} values; a site file needs a few hundred, "
                                   "so this is not the file you meant")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self._refuse_duplicate_keys(node)
            # SafeLoader's own construct_mapping flattens too, but only after our key walk,
            # which must not construct a merge key: it has no constructor of its own.
            self.flatten_mapping(node)
        return super().construct_mapping(node, deep)

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader's own error says what is wrong
                return
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (first on line {first.line + 1}); "
                                "keep one", key_node.start_mark)


class PythonLoader(_Bounded, yaml.SafeLoader):
    """Pure Python throughout: about ten times slower, for a PyYAML built without libyaml."""


try:
    from yaml._yaml import CParser
except ImportError:
    BoundedLoader: type = PythonLoader
else:
    class BoundedLoader(_Bounded, Composer, CParser, SafeConstructor, Resolver):  # type: ignore[no-redef]
        """libyaml's parser under Python's composer: the events come fast from C, and the
        composer, in Python, can count the nodes (libyaml's own composer cannot be stopped)."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


class ExpansionRefused(yaml.YAMLError):
    """More than MAX_NODES values, as written or once aliases are expanded, or aliases that contain themselves."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def load(text: str, loader_class: type = BoundedLoader, limit: int = MAX_NODES) -> object:
    """The YAML document in `text`, refused before construction if it holds more than `limit` values
    as written or once its aliases are expanded."""
    loader = loader_class(text)
    loader.limit = limit
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, limit)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        if error.problem == "exceeded maximum nesting depth":  # libyaml's words for what Python's stack says
            error.problem = "nested too deeply"
        raise
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """How many nodes the tree has once every alias is expanded; ExpansionRefused past `limit`.

    An alias is the same node object as its anchor, so each distinct node's expanded size
    is computed once (by id) and summed as often as it is referred to: linear in the
    file, however far it would expand.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative, so deep nesting costs a list, not the interpreter's stack.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise ExpansionRefused(f"its aliases (*name) expand to more than {limit:,} values; "
                                       "a site file needs a few hundred, so write the repeated parts out "
                                       "or repeat fewer of them")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ExpansionRefused("an alias (*name) refers to a block that contains it, "
                                   "so it would never end; repeat the block without nesting it in itself")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
