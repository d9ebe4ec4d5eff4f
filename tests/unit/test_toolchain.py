"""The toolchain's cache: keyed by what decides the binaries, reused, built once, and failures that name the log."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from infra import toolchain
from infra.errors import HubnodeError
from infra.progress import Progress
from infra.toolchain import ALL_TOOLS, PAUSE, PULUMI_KUBERNETES, WRAPPERS, Tool, cache_key, cache_root
from tests.conftest import PROJECT_DIR


def _wrapper(tmp_path: Path) -> Path:
    folder = tmp_path / "wrapper"
    folder.mkdir()
    (folder / "go.mod").write_text("module x\n\ngo 1.24.0\n")
    (folder / "go.sum").write_text("example.com/a v1.0.0 h1:abc=\n")
    (folder / "main.go").write_text("package main\n\nfunc main() {}\n")
    return folder


def test_the_key_is_stable_for_the_same_inputs(tmp_path: Path) -> None:
    folder = _wrapper(tmp_path)
    assert cache_key(PAUSE, folder, "go1.26.8") == cache_key(PAUSE, folder, "go1.26.8")


@pytest.mark.parametrize(
    "change",
    [
        lambda f: (f / "go.sum").write_text("example.com/a v1.0.1 h1:def=\n"),
        lambda f: (f / "go.mod").write_text("module x\n\ngo 1.25.0\n"),
        lambda f: (f / "main.go").write_text("package main\n\nfunc main() { println() }\n"),
    ],
    ids=["go.sum", "go.mod", "source"],
)
def test_the_key_changes_with_the_wrapper(tmp_path: Path, change: object) -> None:
    folder = _wrapper(tmp_path)
    before = cache_key(PAUSE, folder, "go1.26.8")
    change(folder)  # type: ignore[operator]
    assert cache_key(PAUSE, folder, "go1.26.8") != before


def test_the_key_changes_with_go_and_the_link_flags(tmp_path: Path) -> None:
    folder = _wrapper(tmp_path)
    base = cache_key(PAUSE, folder, "go1.26.8")
    assert cache_key(PAUSE, folder, "go1.27.0") != base
    assert cache_key(Tool(PAUSE.name, PAUSE.binaries, "-s"), folder, "go1.26.8") != base


def test_a_file_the_build_does_not_read_leaves_the_key_alone(tmp_path: Path) -> None:
    folder = _wrapper(tmp_path)
    before = cache_key(PAUSE, folder, "go1.26.8")
    (folder / "README.md").write_text("notes")
    assert cache_key(PAUSE, folder, "go1.26.8") == before


def test_every_wrapper_is_committed_with_its_pins() -> None:
    for tool in ALL_TOOLS:
        folder = WRAPPERS / tool.name
        assert (folder / "go.mod").is_file(), folder
        assert list(folder.glob("*.go")), f"{folder} has no tools.go or main.go"
        requires = "require" in (folder / "go.mod").read_text()
        assert (folder / "go.sum").is_file() or not requires, f"{folder}: go.sum missing"


def test_the_provider_label_is_the_version_pyproject_pins() -> None:
    pyproject = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("pulumi-kubernetes")]
    assert pins == [f"pulumi-kubernetes=={toolchain.PULUMI_KUBERNETES_VERSION}"]
    assert f"Version={toolchain.PULUMI_KUBERNETES_VERSION}" in PULUMI_KUBERNETES.ldflags


def test_the_cache_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "hubnode" / "toolchain"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "hubnode" / "toolchain"


def _fake_go(tmp_path: Path, body: str) -> Path:
    """A `go` that answers `env GOVERSION` and runs `body` for anything else (with "$@")."""
    go = tmp_path / "go"
    go.write_text(f'#!/bin/sh\nif [ "$1" = env ]; then echo go1.99.0; exit 0; fi\n{body}\n')
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    return go


def _use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, go: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(toolchain, "go_command", lambda: go)


def test_a_build_lands_whole_in_the_cache_and_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    counter = tmp_path / "builds"
    # go build -o OUT ...: write OUT, count the call
    go = _fake_go(tmp_path, f'echo built >> {counter}; echo binary > "$3"')
    _use(monkeypatch, tmp_path, go)
    first = toolchain.ensure_tools([PAUSE], Progress(quiet=True))
    second = toolchain.ensure_tools([PAUSE], Progress(quiet=True))
    assert first == second
    assert (first["pause"] / "pause").read_text() == "binary\n"
    assert counter.read_text().count("built") == 1
    leftovers = [p.name for p in cache_root().iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the temporary build folder was not removed"


def test_a_failed_build_names_its_log_and_caches_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    go = _fake_go(tmp_path, 'echo "cannot find module providing package" >&2; exit 1')
    _use(monkeypatch, tmp_path, go)
    with pytest.raises(HubnodeError) as failure:
        toolchain.ensure_tools([PAUSE], Progress(quiet=True))
    logs = list(cache_root().glob("pause-*.log"))
    assert len(logs) == 1
    assert str(logs[0]) in failure.value.message
    assert "cannot find module providing package" in logs[0].read_text()
    assert not [p for p in cache_root().iterdir() if p.is_dir()], "a failed build left a folder in the cache"


def test_the_providers_module_is_downloaded_when_the_module_cache_lacks_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a fresh machine `go list -m` prints an empty Dir for it (seen in a cold run: "." was taken for it)."""
    module, downloaded = tmp_path / "modcache" / "provider", tmp_path / "downloaded"
    command = module / toolchain.PROVIDER_COMMAND
    files = " ".join(toolchain.PROVIDER_FILES)
    go = _fake_go(
        tmp_path,
        f"""case "$1 $2" in
  "list -m") if [ -f {downloaded} ]; then echo {module}; else echo; fi ;;
  "mod download") mkdir -p {command}; for f in {files}; do echo "$f" > {command}/$f; done; touch {downloaded} ;;
  "run generate.go") ;;
  build*) echo binary > "$3" ;;
esac""",
    )
    _use(monkeypatch, tmp_path, go)
    built = toolchain.ensure_tools([PULUMI_KUBERNETES], Progress(quiet=True))
    assert (built["pulumi-kubernetes"] / "pulumi-resource-kubernetes").read_text() == "binary\n"
    [log] = cache_root().glob("pulumi-kubernetes-*.log")
    assert f"$ go mod download {toolchain.PROVIDER_MODULE}" in log.read_text()
