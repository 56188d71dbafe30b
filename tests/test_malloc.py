"""nsjax._malloc: the glibc huge-page setting programs re-run themselves under."""

import os
import subprocess
import sys

import pytest

from nsjax import _malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tuned_environ_adds_the_setting_once():
    env = _malloc.tuned_environ({"PATH": "/bin"}, glibc=True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
    assert _malloc.tuned_environ(env, glibc=True) is None  # the re-run process stops there


def test_tuned_environ_keeps_the_users_tunables():
    env = _malloc.tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, glibc=True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"}
    assert _malloc.tuned_environ(mine, glibc=True) is None  # the user's own choice stands


@pytest.mark.parametrize("environ, glibc", [({}, False), ({"NSJAX_MALLOC": "system"}, True)])
def test_tuned_environ_does_nothing_off_glibc_or_when_asked(environ, glibc):
    assert _malloc.tuned_environ(environ, glibc=glibc) is None


@pytest.mark.parametrize("environ", [{"A": "1"}, {"A": "1", "GLIBC_TUNABLES": "glibc.x=1"}])
def test_original_environ_undoes_the_re_run(environ):
    """The peers' processes get the environment as it was before the re-run."""
    assert _malloc.original_environ(_malloc.tuned_environ(environ, glibc=True)) == environ
    assert _malloc.original_environ(environ) == environ


@pytest.mark.skipif(not _malloc.on_glibc(), reason="the re-run happens on Linux with glibc only")
def test_reexec_runs_the_program_again_under_the_setting():
    code = ("from nsjax import _malloc; _malloc.reexec(['-c', "
            "'import os; print(os.environ[\"GLIBC_TUNABLES\"])'])")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", "NSJAX_MALLOC", "NSJAX_GLIBC_TUNABLES_BEFORE")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "glibc.malloc.hugetlb=1"


def test_the_nsjax_program_runs_after_its_re_run():
    done = subprocess.run([sys.executable, "-m", "nsjax.cli", "--help"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("usage: nsjax")
