"""`bluez_jk.lazy_modules`: the gateway does not load what paho imports only for proxies, and
every user of a deferred module still gets the real one. Each case runs in a fresh interpreter
(the test process has long imported urllib.request)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_gateway_does_not_load_urllib_request_until_a_proxy_lookup() -> None:
    out = run(
        """
        import sys
        import bluez_jk.cli.gateway
        import paho.mqtt.client as paho
        heavy = ("http.client", "email.parser", "urllib.response")
        print([m for m in heavy if m in sys.modules])
        # paho's proxy lookup (with PySocks installed) reads these names: they load on use.
        print(isinstance(paho.urllib.request.getproxies(), dict))
        print(all(m in sys.modules for m in heavy))
        """
    )
    assert out.splitlines() == ["[]", "True", "True"]


def test_a_deferred_module_is_the_real_one_for_every_kind_of_import() -> None:
    out = run(
        """
        import sys
        from bluez_jk.lazy_modules import defer
        defer("urllib.request")
        stand_in = sys.modules["urllib.request"]
        import urllib.request                      # binds the package; loads nothing
        print("http.client" in sys.modules)
        repr(stand_in), stand_in.__file__, stand_in.__spec__  # nor does what `inspect` reads
        print("http.client" in sys.modules)
        from urllib.request import Request         # the first real use loads it
        print(Request.__module__, "http.client" in sys.modules)
        print(urllib.request.Request is Request, stand_in.Request is Request)
        print(type(stand_in).__name__, sys.modules["urllib.request"].Request is Request)
        """
    )
    assert out.splitlines() == [
        "False",
        "False",
        "urllib.request True",
        "True True",
        "module True",
    ]


def test_a_star_import_of_a_deferred_module_gets_its_public_names() -> None:
    out = run(
        """
        from bluez_jk.lazy_modules import defer
        defer("urllib.request")
        names = {}
        exec("from urllib.request import *", names)
        print("urlopen" in names, "Request" in names)
        """
    )
    assert out == "True True"


def test_defer_leaves_imported_and_missing_modules_alone() -> None:
    out = run(
        """
        import sys, json
        from bluez_jk.lazy_modules import defer
        defer("json")
        defer("no_such_module_here")
        print(sys.modules["json"] is json, "no_such_module_here" in sys.modules)
        """
    )
    assert out == "True False"
