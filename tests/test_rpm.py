"""python-poormanci.spec: rpmlint, a source RPM built from the working tree,
and what the spec installs.

Needs `rpmbuild`, `rpmspec` and `rpmlint` (Debian: apt-get install rpm rpmlint).
Fedora's macro packages (pyproject-rpm-macros, cargo-rpm-macros) do not
exist on Debian, so only the source RPM can be built here, not the binary one.
"""

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "python-poormanci.spec"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("rpmbuild", "rpmspec", "rpmlint")),
    reason="rpmbuild/rpmspec/rpmlint not installed (apt-get install rpm rpmlint)",
)

# Fedora's values (Debian's rpm has _sharedstatedir=/usr/com), and a fixed
# buildroot to compare against.
FEDORA_DIRS = ["--define", "_sharedstatedir /var/lib", "--define", "_sysconfdir /etc",
               "--define", "buildroot /BUILDROOT"]


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def project_version():
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def test_rpmlint_spec_has_no_errors():
    r = subprocess.run(["rpmlint", str(SPEC)], capture_output=True, text=True)
    print(r.stdout, r.stderr)  # the warnings, for the log
    errors = [line for line in r.stdout.splitlines() if ": E: " in line]
    assert errors == []
    assert " 0 errors," in r.stdout
    assert r.returncode == 0


@pytest.fixture(scope="module")
def srpm(tmp_path_factory):
    """Source0 from the working tree (tracked and new files, not ignored
    ones), then `rpmbuild -bs`."""
    tmp = tmp_path_factory.mktemp("rpm")
    prefix = f"poormanci-{project_version()}"
    names = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                cwd=ROOT).split("\0")
    tarball = tmp / f"{prefix}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in sorted(n for n in names if n and (ROOT / n).is_file()):
            tar.add(ROOT / name, arcname=f"{prefix}/{name}")
    run("rpmbuild", "-bs", "--define", f"_sourcedir {tmp}", "--define", f"_srcrpmdir {tmp}",
        "--define", f"_topdir {tmp}", str(SPEC))
    built = list(tmp.glob("*.src.rpm"))
    assert len(built) == 1
    return built[0], tarball


def query(rpm_file, *args):
    return run("rpm", "-qp", *args, str(rpm_file))


def test_srpm_name_and_version(srpm):
    path, _ = srpm
    version = project_version()
    assert path.name.startswith(f"python-poormanci-{version}-1")
    assert query(path, "--qf", "%{NAME} %{VERSION} %{LICENSE}") == \
        f"python-poormanci {version} MIT"
    # The newest %changelog entry is for this version.
    assert query(path, "--changelog").splitlines()[0].endswith(f" - {version}-1")
    # Cargo.toml carries the same version (maturin takes pyproject's).
    assert f'\nversion = "{version}"\n' in (ROOT / "Cargo.toml").read_text()


def test_srpm_build_requires(srpm):
    path, _ = srpm
    requires = set(query(path, "--requires").splitlines())
    for expected in ("python3-devel", "pyproject-rpm-macros", "cargo-rpm-macros >= 24", "gcc"):
        assert expected in requires
    # %generate_buildrequires is there: the rest comes from pyproject/Cargo.
    assert any(r.startswith("rpmlib(DynamicBuildRequires)") for r in requires)


def test_srpm_carries_source0(srpm):
    path, tarball = srpm
    files = query(path, "--list").split()
    assert sorted(files) == sorted([tarball.name, SPEC.name])
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    prefix = tarball.name[: -len(".tar.gz")]
    # What %prep, %build and %install use.
    for needed in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "src/lib.rs", "README.md",
                   "fedmsg.d/poormanci.example.py"):
        assert f"{prefix}/{needed}" in names


def test_binary_package_requires_fedmsg_hub():
    out = run("rpmspec", "-q", "--qf",
              "%{NAME}:[ %{REQUIRENEVRS}=%{REQUIREFLAGS:deptype}]\n", str(SPEC))
    packages = {name: set(deps.split()) for name, deps in
                (line.split(":", 1) for line in out.splitlines())}
    assert set(packages) == {"python-poormanci", "python3-poormanci"}
    # A plain runtime Requires ("manual"); the (pre) one alone may be removed
    # after installation. The pre one orders the install after the user exists.
    assert {"fedmsg-hub=manual", "fedmsg-hub=pre"} <= packages["python3-poormanci"]


def test_spec_installs_config_and_state_dir():
    parsed = run("rpmspec", "-P", *FEDORA_DIRS, str(SPEC))
    files = parsed.split("\n%files", 1)[1].split("\n%changelog", 1)[0]
    # The example config is installed as the live one, kept on upgrade, and
    # not world-readable (it holds the tokens).
    assert "install -Dpm 0640 fedmsg.d/poormanci.example.py " \
           "/BUILDROOT/etc/fedmsg.d/poormanci.py" in parsed
    assert "%attr(0640, root, fedmsg) %config(noreplace) /etc/fedmsg.d/poormanci.py" in files
    # The state directory the example config names, writable by fedmsg-hub.
    namespace = {}
    exec((ROOT / "fedmsg.d" / "poormanci.example.py").read_text(), namespace)
    state_dir = namespace["config"]["poormanci.state_dir"]
    assert f"%attr(0750, fedmsg, fedmsg) %dir {state_dir}\n" in files + "\n"
    assert f"install -dm 0750 /BUILDROOT{state_dir}" in parsed
