"""A stand-in for systemctl on hosts whose PID 1 is not systemd: records its arguments and
answers `show` from property files, as systemctl prints them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SCRIPT = """#!{python}
import json, os, sys
from pathlib import Path
home = Path({home!r})
with (home / "calls.jsonl").open("a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
refusal = home / "refuse"
if refusal.exists():
    sys.stderr.write(refusal.read_text())
    sys.exit(1)
if sys.argv[1:2] == ["show"]:
    unit = sys.argv[2]
    props = home / (unit + ".props")
    text = props.read_text() if props.exists() else "LoadState=not-found\\nActiveState=inactive\\n"
    wanted = [a.split("=", 1)[1] for a in sys.argv[3:] if a.startswith("--property=")]
    for line in text.splitlines():
        if line.split("=", 1)[0] in wanted:
            print(line)
"""


class FakeSystemctl:
    """`systemctl` in `home`, first on PATH for the commands run with `env(...)`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        script = home / "systemctl"
        script.write_text(SCRIPT.format(python=sys.executable, home=str(home)))
        script.chmod(0o755)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "PATH": f"{self.home}{os.pathsep}{env.get('PATH', '')}"}

    def calls(self) -> list[list[str]]:
        log = self.home / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def unit(self, name: str, **properties: str) -> None:
        text = "".join(f"{k}={v}\n" for k, v in properties.items())
        (self.home / f"{name}.props").write_text(text)

    def refuse(self, message: str) -> None:
        (self.home / "refuse").write_text(message)
