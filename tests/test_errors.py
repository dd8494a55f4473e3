"""lungdemo.errors: every exception the project defines belongs to the one family the CLIs catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import lungdemo
import train
from lungdemo.errors import LungdemoError, report_error


def project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for pkg in (lungdemo, train):
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_project_exception_is_a_lungdemo_error() -> None:
    found = project_exceptions()
    assert "lungdemo.decoded.ImageDecodeError" in found  # the walk really reaches the modules
    outsiders = sorted(name for name, cls in found.items() if not issubclass(cls, LungdemoError))
    assert outsiders == []


def test_report_error_prints_one_line_on_stderr(capsys) -> None:
    assert report_error(LungdemoError("the folder has no config.json")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: the folder has no config.json\n"
