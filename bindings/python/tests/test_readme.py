"""The README quick start, run as written: a LocalNode with the default model, claimed, a key
made, and a chat completion through the official `openai` client."""

import contextlib
import io
import os
import pathlib
import re

from conftest import model_path

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def quickstart_source() -> str:
    text = README.read_text()
    match = re.search(r"<!-- quickstart:begin -->\s*```python\n(.*?)```\s*<!-- quickstart:end -->", text, re.S)
    assert match, "README.md must keep its quick start between the quickstart markers"
    return match.group(1)


def test_readme_quickstart_runs(monkeypatch):
    monkeypatch.setenv("B3IQ_TEST_MODEL", model_path())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quickstart_source(), str(README), "exec"), {"__name__": "quickstart"})
    lines = out.getvalue().strip().splitlines()
    assert len(lines) >= 2, out.getvalue()
    answer = "\n".join(lines[:-1])
    assert answer.strip(), "the model answered with nothing"
    assert re.match(r"1 receipt\(s\), node b3n_[a-z2-7]{52}$", lines[-1]), lines[-1]
