"""The cluster's programs, built from the pinned Go wrapper modules under `toolchain/`, and its Debian packages.

No registry serves Kubernetes, Pulumi or the provider as binaries we may fetch, but the Go module proxy
serves their source: each wrapper's go.mod + go.sum pins one build. A build costs minutes of both cores,
so each result is kept in a per-user cache keyed by what decides the bytes (the wrapper's files, the Go
version, the link flags) and shared by every clone of the repository. Builds run one at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.bootstrap import apt_install
from infra.errors import HubnodeError
from infra.progress import Progress

#: The wrapper modules, one folder each, committed beside infra/.
WRAPPERS = Path(__file__).resolve().parent.parent / "toolchain"
GO_ENV = {"GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
#: Where Go is when it is not on PATH (the machine image's own install).
GO_FALLBACK = Path("/usr/local/go/bin/go")
KUBERNETES_VERSION = "v1.34.4"
PULUMI_VERSION = "v3.276.0"
#: The label the provider binary reports; it must equal the pulumi-kubernetes pin of pyproject.toml,
#: since the Python SDK asks the engine for a provider of exactly its own version.
PULUMI_KUBERNETES_VERSION = "4.24.1"
PROVIDER_MODULE = "github.com/pulumi/pulumi-kubernetes/provider/v4"
#: The provider's command embeds two JSON files its module lacks; its generate.go writes them.
PROVIDER_COMMAND = "cmd/pulumi-resource-kubernetes"
PROVIDER_FILES = ("main.go", "schema.json", "terraform-mapping.json", "generate.go")

_KUBE_LDFLAGS = " ".join(
    (
        "-s -w",
        f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
        "-X k8s.io/component-base/version.gitMajor=1",
        "-X k8s.io/component-base/version.gitMinor=34",
        f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}",
    )
)

#: dpkg's status of an installed package ("unknown ok not-installed" is a package dpkg merely heard of).
INSTALLED = "install ok installed"
#: Debian packages the cluster runs (containerd, ctr and runc arrive with docker.io).
PACKAGES = ("etcd-server", "containernetworking-plugins", "nftables")


@dataclass(frozen=True)
class Tool:
    """One wrapper module and the binaries built from it (binary name -> Go package)."""

    name: str
    binaries: tuple[tuple[str, str], ...]
    ldflags: str = "-s -w"
    #: Set for the provider: its command is copied out of the module cache and generated first.
    generated_from: str | None = None


KUBERNETES = Tool(
    "kubernetes",
    tuple(
        (binary, f"k8s.io/kubernetes/cmd/{binary}")
        for binary in (
            "kube-apiserver",
            "kubelet",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
            "kubectl",
        )
    ),
    _KUBE_LDFLAGS,
)
PAUSE = Tool("pause", (("pause", "."),))
PULUMI = Tool(
    "pulumi",
    (("pulumi", "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"),),
    f"-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={PULUMI_VERSION}",
)
PULUMI_KUBERNETES = Tool(
    "pulumi-kubernetes",
    (("pulumi-resource-kubernetes", "."),),
    f"-s -w -X {PROVIDER_MODULE}/pkg/version.Version={PULUMI_KUBERNETES_VERSION}",
    generated_from=PROVIDER_MODULE,
)
#: Cheapest first, so a cluster is usable before the Pulumi pieces are built.
ALL_TOOLS = (PAUSE, KUBERNETES, PULUMI, PULUMI_KUBERNETES)
#: What `hubnode cluster up` needs.
CLUSTER_TOOLS = (PAUSE, KUBERNETES)


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/hubnode/toolchain` (default `~/.cache/...`): shared by every clone of the repository."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hubnode" / "toolchain"


def cache_key(tool: Tool, wrapper: Path, go_version: str) -> str:
    """What decides the binaries' bytes: the wrapper's files, the Go version, the packages and link flags."""
    digest = hashlib.sha256()
    digest.update(repr((go_version, tool.binaries, tool.ldflags, tool.generated_from)).encode())
    for path in sorted(p for p in wrapper.iterdir() if p.name in ("go.mod", "go.sum") or p.suffix == ".go"):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def go_command() -> Path:
    """The Go tool to build with, or what to do when there is none."""
    found = shutil.which("go")
    if found:
        return Path(found)
    if GO_FALLBACK.is_file():
        return GO_FALLBACK
    raise HubnodeError(
        "no Go toolchain (go 1.26 or newer) to build the cluster's programs",
        fix="install Go from go.dev/dl into /usr/local/go, or put its `go` on PATH",
    )


def go_version(go: Path) -> str:
    """`go env GOVERSION`, part of every cache key: a new Go rebuilds everything."""
    return _go(go, ["env", "GOVERSION"], Path.cwd()).strip()


def ensure_tools(tools: Sequence[Tool], progress: Progress) -> dict[str, Path]:
    """The bin folder of each tool, built first where the cache has none; serially."""
    go = go_command()
    version = go_version(go)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return {tool.name: _ensure(tool, go, version, root, progress) for tool in tools}


def ensure_packages(progress: Progress) -> None:
    """Install the Debian packages the cluster runs, if any is missing (needs root)."""
    missing = [name for name in PACKAGES if not _installed(name)]
    if shutil.which("containerd") is None or shutil.which("runc") is None:
        missing.append("docker.io")
    if not missing:
        return
    if os.geteuid() != 0:
        raise HubnodeError(
            f"the cluster needs Debian's {', '.join(missing)}",
            fix=f"run `sudo apt-get install {' '.join(missing)}`, or run hubnode as root",
        )
    progress.note(f"installing Debian's {', '.join(missing)}")
    apt_install(*missing)


def binary(bins: dict[str, Path], tool: Tool, name: str) -> Path:
    """The path of one built binary."""
    return bins[tool.name] / name


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return result.returncode == 0 and result.stdout == INSTALLED


def _ensure(tool: Tool, go: Path, version: str, root: Path, progress: Progress) -> Path:
    wrapper = WRAPPERS / tool.name
    key = cache_key(tool, wrapper, version)
    final = root / f"{tool.name}-{key}"
    with _locked(root / f"{tool.name}-{key}.lock"):
        if (final / "bin").is_dir():
            return final / "bin"
        log = root / f"{tool.name}-{key}.log"
        log.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{tool.name}-", dir=root) as work:
            staging = Path(work) / "result"
            _build(tool, go, staging, log, progress)
            staging.rename(final)
    return final / "bin"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`: a second run waits instead of building the same thing."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(tool: Tool, go: Path, staging: Path, log: Path, progress: Progress) -> None:
    """Build `tool`'s binaries into `staging/bin`, with any generated source beside `staging`."""
    wrapper = source = WRAPPERS / tool.name
    bin_dir = staging / "bin"
    if tool.generated_from is not None:
        with progress.step(f"generate {tool.name}'s embedded schema"):
            source = _generated_source(tool.generated_from, go, wrapper, staging.parent / "src", log)
    bin_dir.mkdir(parents=True)
    for name, package in tool.binaries:
        with progress.step(f"go build {name} (toolchain/{tool.name}; minutes when not cached)"):
            _go(go, ["build", "-o", str(bin_dir / name), "-ldflags", tool.ldflags, package], source, log)


def _generated_source(module: str, go: Path, wrapper: Path, src: Path, log: Path) -> Path:
    """The wrapper plus the provider's command copied from the module cache, its embedded files generated."""
    src.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(wrapper / name, src / name)
    module_dir = _module_dir(module, go, src, log)
    if module_dir is None:
        _go(go, ["mod", "download", module], src, log)
        module_dir = _module_dir(module, go, src, log)
    if module_dir is None:
        raise HubnodeError(
            f"go mod download {module} left no copy of it in the module cache; the log is {log}",
            fix="check that the Go module proxy answers (GOPROXY) and that GOMODCACHE is writable",
        )
    for name in PROVIDER_FILES:
        shutil.copyfile(module_dir / PROVIDER_COMMAND / name, src / name)
    label = PULUMI_KUBERNETES_VERSION
    _go(go, ["run", "generate.go"], src, log, extra_env={"VERSION": label})
    (src / "generate.go").unlink()
    return src


def _module_dir(module: str, go: Path, cwd: Path, log: Path) -> Path | None:
    """Where the module cache holds `module`, or None: `go list -m` prints an empty Dir for one not downloaded."""
    listed = _go(go, ["list", "-m", "-f", "{{.Dir}}", module], cwd, log).strip()
    return Path(listed) if listed and Path(listed).is_dir() else None


def _go(go: Path, args: list[str], cwd: Path, log: Path | None = None, extra_env: dict[str, str] | None = None) -> str:
    """Run `go args` in `cwd`; its output is appended to `log`, and a failure names that log."""
    env = {**os.environ, **GO_ENV, **(extra_env or {})}
    started = time.monotonic()
    result = subprocess.run([str(go), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ go {' '.join(args)}  (in {cwd}, {time.monotonic() - started:.1f} s)\n")
            out.write(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        where = f"; the whole output is in {log}" if log is not None else ""
        raise HubnodeError(
            f"go {' '.join(args[:2])} failed (exit {result.returncode}){where}:\n{tail}",
            fix="check that the Go module proxy answers (GOPROXY) and that go is 1.26 or newer; "
            "a wrapper's go.sum out of date is fixed by `go mod tidy` in its folder under toolchain/",
        )
    return result.stdout
