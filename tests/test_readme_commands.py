"""README's two commands exist, and .ci/run runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    main = re.search(r"<!-- main-command -->\s*```(?:bash|sh)?\n(.+?)\n```", text, re.S)
    test = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", text, re.S)
    assert main and test, "README must mark its two commands with <!-- main-command --> and <!-- test-command -->"
    return main.group(1).strip(), test.group(1).strip()


def test_ci_runs_the_readme_test_command():
    _, test_cmd = readme_commands()
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_cmds = [ln for ln in ci_lines if ln and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    assert ci_cmds == [test_cmd], f".ci/run runs {ci_cmds}, README says {test_cmd!r}"


def test_readme_commands_point_at_existing_scripts():
    for cmd in readme_commands():
        script = cmd.split()[1] if cmd.startswith("bash ") else cmd.split()[0]
        assert (ROOT / script).is_file(), f"README command {cmd!r} names missing {script}"
