"""The README's first lines are the two commands that do everything; CI runs the second."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _first_block():
    text = (ROOT / "README.md").read_text()
    return re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()


def test_readme_starts_with_two_commands():
    lines = _first_block()
    assert len(lines) == 2
    assert lines[0].startswith("python -m pip install") and "neurosim " in lines[0]
    assert lines[1].startswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _first_block()[1] in [l.strip() for l in ci]


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
