"""Actors and commands are found through installed entry points. A shared or older install of the package can
predate this checkout's pyproject.toml (a new actor), so processes the tests start, and the tests' own process,
get this checkout's entry points first on their path, as a dist-info of its own made in a temporary folder. A
fresh install (CI) already has them, and nothing is made."""
from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from importlib.metadata import entry_points
from pathlib import Path


def use_checkout_entry_points(root: Path) -> None:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {group: eps for group, eps in project.get("entry-points", {}).items()}
    installed = {group: {ep.name: ep.value for ep in entry_points(group=group)} for group in declared}
    if all(installed[g].get(name) == value for g, eps in declared.items() for name, value in eps.items()):
        return
    folder = Path(tempfile.mkdtemp(prefix="xdsi-entry-points-")) / f"xdsi-{project['version']}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: xdsi\nVersion: {project['version']}\n")
    groups = [f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items())
              for group, eps in declared.items()]
    groups.append("[console_scripts]\n" + "".join(f"{n} = {t}\n" for n, t in project.get("scripts", {}).items()))
    (folder / "entry_points.txt").write_text("\n".join(groups))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder.parent), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    sys.path.insert(0, str(folder.parent))     # and the tests' own process (compose checks, fixtures)
