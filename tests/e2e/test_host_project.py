"""Conduit RT installed as a user installs it: the wheel in a fresh virtualenv, a project made by
``django-admin startproject``, and exactly the steps of the README's section "Adding Conduit RT to
an existing Django project" (read from the README here, block by block, so the two cannot drift).

The official ``@microsoft/signalr`` client then talks to the host's own hub on a real daphne, and
receives and acknowledges an event a host view sends through ``get_hub_context``. Then once more
without the monitoring app, as the README says to leave it out.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, free_port, js_client, stop_process, wait_for_port

pytestmark = [pytest.mark.e2e]

SECTION = "## Adding Conduit RT to an existing Django project"
#: Every step's subprocess is bounded; installing into an empty virtualenv is the slowest.
INSTALL_TIMEOUT = 600
STEP_TIMEOUT = 120


@dataclass
class Block:
    language: str  # "bash" or "python"
    target: str  # "shell", or a path in the project
    mode: str  # "append", "new file", "replace" (files); "" for shell blocks
    body: str


def readme_blocks() -> list[Block]:
    """The code blocks of the README's section, in order, with where each goes."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = []
    for _indent, language, body in re.findall(r"(?m)^( *)```(bash|python)\n(.*?)^\1```$", section, re.S):
        body = textwrap.dedent(body)
        first, _, rest = body.partition("\n")
        where = first.removeprefix("# ").strip()
        target, _, mode = where.partition(": ")
        blocks.append(Block(language, target, mode, rest))
    return blocks


class HostProject:
    """A virtualenv with the wheel, and a Django project in ``root``."""

    def __init__(self, root: Path, venv: Path, wheel: Path) -> None:
        self.root = root
        self.venv = venv
        self.wheel = wheel
        self.env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(root)}
        self.server: subprocess.Popen[Any] | None = None
        self.port = 0

    def run(self, argv: list[str], timeout: float = STEP_TIMEOUT) -> str:
        done = subprocess.run(
            argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def python(self, *args: str, timeout: float = STEP_TIMEOUT) -> str:
        return self.run([str(self.venv / "bin/python"), *args], timeout)

    def shell_line(self, line: str) -> None:
        """One line of a README shell block, run as the README says, with this test's wheel for
        the distribution's name and a free port for 8000."""
        words = line.split()
        if words[:2] == ["pip", "install"]:
            spec = words[2].strip('"')
            extras = spec.removeprefix("conduit-rt")
            assert spec.startswith("conduit-rt"), line
            # The pinned set as constraints: the versions CI tests (and pip's cache) hold.
            self.run(
                [
                    str(self.venv / "bin/pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"{self.wheel}{extras}",
                    "-c",
                    str(ROOT / "requirements.txt"),
                ],
                INSTALL_TIMEOUT,
            )
        elif words[:3] == ["python", "manage.py", "serve"]:
            self.start_server(words[3:])
        elif words[0] == "python":
            self.python(*words[1:])
        else:
            raise AssertionError(f"The test does not know how to run README line {line!r}")

    def start_server(self, args: list[str]) -> None:
        self.port = free_port()
        args = [str(self.port) if a == "8000" else a for a in args]
        log = open(self.root / f"daphne-{self.port}.log", "ab")  # noqa: SIM115 - closed with the process
        self.server = subprocess.Popen(
            [str(self.venv / "bin/python"), "manage.py", "serve", *args],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, 60, self.server)

    def stop_server(self) -> None:
        if self.server is not None:
            stop_process(self.server)
            self.server = None

    def apply(self, block: Block) -> None:
        if block.target == "shell":
            for line in block.body.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    self.shell_line(line.strip())
            return
        path = self.root / block.target
        if block.mode == "append":
            path.write_text(path.read_text() + "\n" + block.body)
        elif block.mode in ("new file", "replace"):
            assert (block.mode == "replace") == path.exists(), f"{block.target}: {block.mode}"
            path.write_text(block.body)
        else:
            raise AssertionError(f"Unknown step {block.mode!r} for {block.target}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def shell(self, code: str) -> str:
        return self.python("manage.py", "shell", "-v", "0", "-c", code)

    def announce(self, text: str) -> str:
        """POST to the host's own view, which sends an acknowledged event; its message id."""
        body = urllib.parse.urlencode({"text": text}).encode()
        request = urllib.request.Request(f"{self.url}/announce", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["messageId"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        timeout=STEP_TIMEOUT,
        capture_output=True,
    )
    (built,) = out.glob("conduit_rt-*.whl")
    return built


@pytest.fixture(scope="module")
def host(tmp_path_factory, wheel) -> HostProject:
    """The README's steps, applied to a fresh project (the server left running)."""
    root = tmp_path_factory.mktemp("host")
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=STEP_TIMEOUT)
    project = HostProject(root, venv, wheel)
    # The user's existing project: Django, and what startproject made.
    django_pin = next(
        line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("Django==")
    )
    project.run(
        [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", django_pin],
        INSTALL_TIMEOUT,
    )
    project.run([str(venv / "bin/django-admin"), "startproject", "myproject", str(root)])
    for block in readme_blocks():
        project.apply(block)
    yield project
    project.stop_server()


def test_the_wheel_holds_the_two_apps_and_nothing_of_the_project(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("conduit_rt-")}
    assert tops == {"hubs", "monitoring"}
    for packaged in (
        "hubs/static/conduit/conduit.mjs",
        "hubs/migrations/0002_acked_messages_and_dead_letters.py",
        "hubs/management/commands/serve.py",
        "monitoring/templates/admin/monitoring/dashboard.html",
        "monitoring/static/monitoring/dashboard.js",
        "monitoring/migrations/0001_admin_entries.py",
    ):
        assert packaged in names
    metadata = next(n for n in names if n.endswith("/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: Django<6.1,>=5.2" in text
    assert "Provides-Extra: redis" in text and "License-Expression: BSD-3-Clause" in text


def test_the_readme_steps_give_a_working_hub(host):
    tables = json.loads(
        host.shell(
            "import json; from django.db import connection; print(json.dumps(connection.introspection.table_names()))"
        )
    )
    assert {"hubs_ackedmessage", "hubs_deadletter"} <= set(tables)
    assert not [t for t in tables if t.startswith(("demo_", "hubs_task"))]

    found = host.python("manage.py", "findstatic", "conduit/conduit.mjs", "monitoring/monitoring.css")
    assert "site-packages/hubs/static/conduit/conduit.mjs" in found
    assert "site-packages/monitoring/static/monitoring/monitoring.css" in found

    url = f"{host.url}/hubs/chat"
    speaker = js_client(url, "", events=["Said", "Announcement"])
    listener = js_client(url, "", events=["Said", "Announcement"])
    try:
        speaker.expect("connected", timeout=20)
        listener.expect("connected", timeout=20)
        assert speaker.invoke("Say", "hello")["result"] == "HELLO"
        said = listener.expect("message", timeout=10, target="Said")["payload"]
        assert said["text"] == "hello"
        assert said["messageId"] and said["timestamp"] and said["retryCount"] == 0

        message_id = host.announce("from a view")
        announced = listener.expect("message", timeout=10, target="Announcement")["payload"]
        assert announced["messageId"] == message_id
        assert announced["text"] == "from a view"
        assert announced["requiresAck"] is True
        assert listener.invoke("AcknowledgeMessage", message_id)["result"] is True
        assert listener.invoke("AcknowledgeMessage", message_id)["result"] is False  # idempotent
    finally:
        speaker.close()
        listener.close()


def test_the_monitoring_admin_renders_from_the_installed_app(host):
    host.shell(
        "from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_superuser('admin', '', 'admin-password')"
    )
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{host.url}/admin/login/", timeout=10) as response:
        response.read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = {"username": "admin", "password": "admin-password", "csrfmiddlewaretoken": csrf, "next": "/admin/"}
    login = urllib.request.Request(
        f"{host.url}/admin/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": f"{host.url}/admin/login/"},
    )
    with opener.open(login, timeout=10) as response:
        assert "Log out" in response.read().decode()
    for page, expected in (
        ("/admin/monitoring/dashboard/", "dashboard"),
        ("/admin/monitoring/connection/", "connection"),
        ("/admin/monitoring/groupsubscription/", "group subscription"),
        ("/admin/hubs/deadletter/", "dead letter"),
    ):
        with opener.open(host.url + page, timeout=10) as response:
            assert response.status == 200
            assert expected in response.read().decode().lower()
    with urllib.request.urlopen(f"{host.url}/metrics", timeout=10) as response:
        assert 'conduit_active_connections{hub="chat"}' in response.read().decode()


def test_without_the_monitoring_app_the_hub_still_works(host):
    host.stop_server()
    settings = host.root / "myproject/settings.py"
    settings.write_text(settings.read_text().replace(' "monitoring", "health_check",', ""))
    urls = host.root / "myproject/urls.py"
    kept = [
        line
        for line in urls.read_text().splitlines()
        if "monitoring" not in line and "health/" not in line and '"metrics"' not in line
    ]
    urls.write_text("\n".join(kept) + "\n")
    assert "monitoring" not in host.shell("from django.conf import settings; print(settings.INSTALLED_APPS)")
    host.start_server(["--port", "8000"])

    client = js_client(f"{host.url}/hubs/chat", "", events=["Announcement"])
    try:
        client.expect("connected", timeout=20)
        assert client.invoke("Say", "still here")["result"] == "STILL HERE"
        message_id = host.announce("no monitor")
        assert (
            client.expect("message", timeout=10, target="Announcement")["payload"]["messageId"] == message_id
        )
        assert client.invoke("AcknowledgeMessage", message_id)["result"] is True
    finally:
        client.close()
