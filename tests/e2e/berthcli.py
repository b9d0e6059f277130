"""Running the berth binary from e2e tests.

``BERTH_BIN`` -- ``$BERTH_BIN`` or ``<repo>/build/berth``.

``run_berth(*args, env=None, check=True, timeout=300, input=None, cwd=None)``
runs ``BERTH_BIN *args`` and returns ``subprocess.CompletedProcess`` with
text ``stdout``/``stderr``.  ``env`` entries are layered over ``os.environ``
(a value of None removes the variable).  With ``check=True`` a non-zero exit
raises :class:`BerthError` whose message contains the command, exit code,
stdout and stderr.  Example::

    r = run_berth("--data-dir", berth_data, "image", "pull", registry.ref("test/busybox:latest"))
"""

from __future__ import annotations

import os
import shlex
import subprocess

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BERTH_BIN = os.environ.get("BERTH_BIN") or os.path.join(REPO_ROOT, "build", "berth")


class BerthError(subprocess.CalledProcessError):
    def __str__(self):
        return (f"berth exited {self.returncode}: {shlex.join(map(str, self.cmd))}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def run_berth(*args, env=None, check=True, timeout=300, input=None, cwd=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = str(v)
    cmd = [BERTH_BIN, *map(str, args)]
    r = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout,
                       input=input, cwd=cwd)
    if check and r.returncode != 0:
        raise BerthError(r.returncode, cmd, r.stdout, r.stderr)
    return r


def berth_available() -> bool:
    return os.path.isfile(BERTH_BIN) and os.access(BERTH_BIN, os.X_OK)
