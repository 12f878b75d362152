"""The README's quickstart runs as written, and prints lme4's REML criterion."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_quickstart_runs():
    text = README.read_text()
    quickstart = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", quickstart, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README quickstart", "exec"), {})
    # lme4 1.1-31, lmer(Reaction ~ Days + (Days | Subject), sleepstudy): REML criterion 1743.628
    assert "1743.628" in out.getvalue()


def test_readme_has_exactly_the_two_setup_commands_that_ci_runs():
    text = README.read_text()
    setup = text.split("## Set-up", 1)[1].split("##", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", setup, re.S).group(1).strip().splitlines()
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci
