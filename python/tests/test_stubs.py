# SPDX-License-Identifier: MIT
"""test_stubs.py: the type stubs (memport/__init__.pyi) and the module agree: every stubbed class, method and function exists, and every public name of the module and of its classes is stubbed."""

import ast
import inspect
import os

import pytest

import memport


def _stub_tree():
    path = os.path.join(os.path.dirname(memport.__file__), "__init__.pyi")
    if not os.path.exists(path):
        pytest.fail("no type stubs beside the package: %s" % path)
    with open(path) as f:
        return ast.parse(f.read(), path)


def _stubbed():
    """{class name: set of member names (with those of stubbed base classes)}, and functions."""
    tree = _stub_tree()
    classes, bases, funcs = {}, {}, set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
            classes[node.name] = members
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            funcs.add(node.target.id)

    def all_members(c, seen=()):
        out = set(classes.get(c, ()))
        for b in bases.get(c, ()):
            if b in classes and b not in seen:
                out |= all_members(b, seen + (c,))
        return out

    return {c: all_members(c) for c in classes}, funcs


def test_stubbed_names_exist():
    classes, funcs = _stubbed()
    missing = []
    for c, members in classes.items():
        if c.startswith("_"):
            continue
        obj = getattr(memport, c, None)
        if obj is None:
            missing.append(c)
            continue
        for m in members:
            if m.startswith("__") or m in ("code", "name"):
                continue
            if not hasattr(obj, m):
                missing.append("%s.%s" % (c, m))
    for f in funcs:
        if not f.startswith("_") and not hasattr(memport, f):
            missing.append(f)
    assert not missing, "stubbed but absent: %s" % ", ".join(sorted(missing))


def test_public_names_are_stubbed():
    classes, funcs = _stubbed()
    unstubbed = []
    for n in dir(memport):
        if n.startswith("_"):
            continue
        obj = getattr(memport, n)
        if inspect.ismodule(obj):
            continue
        if isinstance(obj, type):
            if n not in classes:
                unstubbed.append(n)
                continue
            if issubclass(obj, BaseException):
                continue
            for m in dir(obj):
                if not m.startswith("_") and m not in classes[n]:
                    unstubbed.append("%s.%s" % (n, m))
        elif callable(obj) and n not in funcs:
            unstubbed.append(n)
    assert not unstubbed, "public but not in the stubs: %s" % ", ".join(sorted(unstubbed))
