"""``scaffold dissector``: the Wireshark dissector shipped with scaffold (docs/operations.md §2).

``scaffold dissector path`` prints where the Lua file is (for ``tshark -X
lua_script:PATH``); ``scaffold dissector install`` copies it into Wireshark's personal plugin
folder (``~/.local/lib/wireshark/plugins/``, or ``--dir``), where Wireshark and tshark load
it at start.
"""

from __future__ import annotations

import argparse
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["PLUGIN_DIR", "add_commands", "dissector_path"]

#: Wireshark's personal Lua plugin folder (Linux, macOS)
PLUGIN_DIR = Path("~/.local/lib/wireshark/plugins")


def dissector_path() -> Path:
    """The dissector's Lua file, inside the installed package."""
    return Path(str(resources.files("scaffold") / "wireshark" / "scaffold.lua"))


def add_commands(sub: Any) -> None:
    group = sub.add_parser("dissector", help="the Wireshark dissector: where it is, install it")
    kinds = group.add_subparsers(dest="dissector_command", required=True, metavar="COMMAND")
    path = kinds.add_parser("path", help="print the path of the Lua dissector (tshark -X lua_script:PATH)")
    path.set_defaults(func=_path)
    install = kinds.add_parser("install", help=f"copy it to Wireshark's plugin folder ({PLUGIN_DIR}/)")
    install.add_argument("--dir", default=str(PLUGIN_DIR), help=f"the plugin folder (default {PLUGIN_DIR})")
    install.set_defaults(func=_install)


def _path(args: argparse.Namespace) -> int:
    print(dissector_path())
    return 0


def _install(args: argparse.Namespace) -> int:
    folder = Path(args.dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = Path(shutil.copyfile(dissector_path(), folder / "scaffold.lua"))
    except OSError as exc:
        raise ConfigError(f"cannot install the dissector in {folder}: {exc.strerror or exc}") from None
    print(f"installed {target}; Wireshark and tshark load it at their next start")
    return 0
