"""The error tree (walstream/errors.py): every class carries its HTTP status and durable answer,
the module docstring draws the tree as it is, no error class lives anywhere else, and the API's
answer to each error is what its class says (the statuses walstream.api.responses decided class
by class before they moved onto the classes)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import get_args

import orjson
import pytest

import walstream
from walstream import errors
from walstream.api.responses import error_response, status_for
from walstream.errors import Durable, WalError

CLASSES = {
    obj.__name__: obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, WalError) and obj.__module__ == errors.__name__
}
_ENTRY = re.compile(r"^(?P<indent> *)[*x+] (?P<name>\w+)")
_ANSWER = re.compile(r"\b(?P<status>\d{3}) (?P<durable>TRUE|FALSE|UNKNOWN)\b")


def tree() -> list[tuple[int, str, int, str]]:
    """(depth, class name, status, durable) for each class the docstring lists, in order."""
    doc = errors.__doc__ or ""
    entries: list[tuple[int, str, str]] = []  # depth, name, the entry's text (with wrapped lines)
    for line in doc.splitlines():
        entry = _ENTRY.match(line)
        if entry:
            entries.append((len(entry["indent"]) // 2, entry["name"], line))
        elif entries and line.startswith(" ") and line.strip():
            depth, name, text = entries[-1]
            entries[-1] = (depth, name, f"{text} {line}")
    out = []
    for depth, name, text in entries:
        answer = _ANSWER.search(text)
        assert answer, f"the tree names no status and durable for {name}: {text!r}"
        out.append((depth, name, int(answer["status"]), answer["durable"]))
    return out


def test_every_error_class_has_a_status_and_a_durable_answer():
    assert len(CLASSES) > 20
    for cls in CLASSES.values():
        assert isinstance(cls.status, int), cls
        assert 400 <= cls.status <= 599, cls
        assert cls.durable in get_args(Durable), cls


def test_the_docstring_tree_lists_every_class_with_its_parent_and_answer():
    listed = tree()
    names = [name for _, name, _, _ in listed]
    assert len(names) == len(set(names)), "a class listed twice"
    assert set(names) == set(CLASSES), (
        f"missing from the tree: {sorted(set(CLASSES) - set(names))}; "
        f"listed but not a class: {sorted(set(names) - set(CLASSES))}"
    )
    parents: list[str] = []
    for depth, name, status, durable in listed:
        cls = CLASSES[name]
        del parents[depth:]
        assert len(parents) == depth, f"{name} is indented under nothing"
        if depth:
            assert cls.__bases__ == (CLASSES[parents[-1]],), f"{name}'s parent"
        else:
            assert cls is WalError
        assert (status, durable) == (cls.status, cls.durable), f"the tree's answer for {name}"
        parents.append(name)


def test_the_docstring_names_only_modules_that_exist():
    for module in re.findall(r"walstream(?:\.\w+)+", errors.__doc__ or ""):
        path = Path(walstream.__file__).parent.joinpath(*module.split(".")[1:])
        assert path.with_suffix(".py").is_file() or path.is_dir(), module
    for test in re.findall(r"tests/\S+\.py", errors.__doc__ or ""):
        assert (Path(__file__).parents[2] / test).is_file(), test


def test_no_error_class_is_defined_outside_errors_py():
    """A WalError subclass defined elsewhere would escape the tree (and the API's lookup)."""
    names = set(CLASSES)
    found: list[str] = []
    root = Path(walstream.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path == Path(errors.__file__):
            continue
        text = path.read_text()
        if not re.search(r"^\s*class \w+\([^)]*Error", text, re.MULTILINE):
            continue  # no class with an error base: nothing to parse
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {
                b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases
            }
            if bases & names:
                found.append(f"{path.relative_to(root.parent)}: {node.name}")
    assert found == [], "define error classes in walstream/errors.py (and list them in its tree)"


def _instance(cls: type[WalError]) -> WalError:
    """An instance of ``cls`` with placeholder arguments."""
    if cls.__init__ is Exception.__init__:  # a message only
        return cls("x")
    args = []
    for param in list(inspect.signature(cls).parameters.values()):
        if param.kind is not param.POSITIONAL_OR_KEYWORD or param.default is not param.empty:
            continue
        kind = str(param.annotation)
        args.append(2.4 if kind == "float" else ["GET", "POST"] if kind.startswith("list") else "x")
    return cls(*args)


#: What the API answered for each error before statuses moved onto the classes (status_for's
#: isinstance chain and error_response's headers in walstream/api/responses.py).
ANSWERS: dict[str, tuple[int, str, dict[str, str]]] = {
    "BadRequestError": (400, "FALSE", {}),
    "PayloadTooLargeError": (413, "FALSE", {}),
    "RequestTimeoutError": (408, "FALSE", {}),
    "TargetNotAllowedError": (403, "FALSE", {}),
    "UnauthorizedError": (401, "FALSE", {"WWW-Authenticate": 'Bearer realm="walstream"'}),
    "ForbiddenError": (403, "FALSE", {}),
    "NamespaceNotFoundError": (404, "FALSE", {}),
    "NamespaceUnavailableError": (503, "FALSE", {}),
    "RouteNotFoundError": (404, "FALSE", {}),
    "MutationsNotEnabledError": (404, "FALSE", {}),
    "MethodNotAllowedError": (405, "FALSE", {"Allow": "GET, POST"}),
    "RedriveConflictError": (409, "FALSE", {}),
    "ReplayConflictError": (409, "FALSE", {}),
    "ServiceUnavailableError": (503, "FALSE", {}),
    "OverloadedError": (503, "FALSE", {"Retry-After": "2"}),
    "WriteRejectedError": (503, "FALSE", {}),
    "BrokerUnavailableError": (503, "FALSE", {"Retry-After": "2"}),
    "WriteUnknownError": (504, "UNKNOWN", {}),
}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_api_answers_each_error_as_before(name):
    exc = _instance(CLASSES[name])
    status, durable, headers = ANSWERS.get(name, (500, "UNKNOWN", {}))  # the rest: a bug
    assert status_for(exc) == (status, durable)
    response = error_response(exc)
    assert response.status == status
    assert response.content_type == "application/json"
    assert {k: v for k, v in response.headers.items() if k != "Content-Type"} == headers
    assert response.body is not None
    body = orjson.loads(response.body)  # type: ignore[arg-type]
    assert body["durable"] == durable
    assert body["error"] == name
    assert body["message"] == str(exc)
    if isinstance(exc, errors.BadRequestError):
        assert (body["field"], body["reason"]) == (exc.field, exc.reason)
    else:
        assert set(body) == {"durable", "error", "message"}
