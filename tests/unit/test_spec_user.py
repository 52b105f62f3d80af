"""resolve_user: the container's own passwd/group files decide uid, gid and groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.spec import ResolvedUser, resolve_user
from crio_py.spec.user import rootfs_path

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
web:x:1001:3000::/:/bin/sh
broken line
"""
GROUP = """root:x:0:
app:x:1000:
audio:x:29:app,web
video:x:44: app
web:x:3000:
staff:x:50:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def sc(**kw: object) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(**kw)  # type: ignore[arg-type]


def test_no_user_anywhere_is_root(rootfs: Path) -> None:
    assert resolve_user(rootfs, None, "") == ResolvedUser(0, 0, (0,), "root")


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        ("app", ResolvedUser(1000, 1000, (1000, 29, 44), "app")),
        ("1000", ResolvedUser(1000, 1000, (1000, 29, 44), "app")),
        ("1000:50", ResolvedUser(1000, 50, (50, 29, 44), "app")),
        ("app:staff", ResolvedUser(1000, 50, (50, 29, 44), "app")),
        ("1001:staff", ResolvedUser(1001, 50, (50, 29), "web")),
        ("web", ResolvedUser(1001, 3000, (3000, 29), "web")),
        ("4242", ResolvedUser(4242, 0, (0,), "")),
        ("4242:4343", ResolvedUser(4242, 4343, (4343,), "")),
    ],
)
def test_image_user_forms(rootfs: Path, image_user: str, expected: ResolvedUser) -> None:
    assert resolve_user(rootfs, sc(), image_user) == expected


def test_run_as_user_overrides_image_user_and_its_group(rootfs: Path) -> None:
    got = resolve_user(rootfs, sc(run_as_user=pb.Int64Value(value=1001)), "app:staff")
    assert got == ResolvedUser(1001, 3000, (3000, 29), "web")


def test_run_as_user_zero_is_set_not_absent(rootfs: Path) -> None:
    assert resolve_user(rootfs, sc(run_as_user=pb.Int64Value(value=0)), "app").uid == 0


def test_run_as_username(rootfs: Path) -> None:
    assert resolve_user(rootfs, sc(run_as_username="app"), "web").uid == 1000


def test_run_as_group_overrides_gid(rootfs: Path) -> None:
    got = resolve_user(rootfs, sc(run_as_group=pb.Int64Value(value=7)), "app:staff")
    assert (got.gid, got.additional_gids) == (7, (7, 29, 44))


def test_supplemental_groups_merge_and_strict(rootfs: Path) -> None:
    merge = resolve_user(rootfs, sc(supplemental_groups=[5000, 29]), "app")
    assert merge.additional_gids == (1000, 29, 44, 5000)
    strict = resolve_user(
        rootfs, sc(supplemental_groups=[5000], supplemental_groups_policy=pb.SupplementalGroupsPolicy.Strict), "app"
    )
    assert strict.additional_gids == (1000, 5000)


def test_sandbox_security_context(rootfs: Path) -> None:
    ctx = pb.LinuxSandboxSecurityContext(run_as_user=pb.Int64Value(value=1000), supplemental_groups=[9])
    assert resolve_user(rootfs, ctx, "") == ResolvedUser(1000, 1000, (1000, 29, 44, 9), "app")


@pytest.mark.parametrize(
    ("context", "image_user", "match"),
    [
        (sc(), "nobody", "user 'nobody' is not in the image's /etc/passwd"),
        (sc(run_as_username="ghost"), "", "user 'ghost'"),
        (sc(), "app:nogroup", "group 'nogroup' is not in the image's /etc/group"),
        (sc(), "99999999999", "out of range"),
        (sc(run_as_user=pb.Int64Value(value=-1)), "", "must not be negative"),
        (sc(run_as_group=pb.Int64Value(value=-5)), "", "must not be negative"),
    ],
)
def test_invalid_users(rootfs: Path, context: pb.LinuxContainerSecurityContext, image_user: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        resolve_user(rootfs, context, image_user)


def test_missing_files_mean_no_names(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, None, "1000") == ResolvedUser(1000, 0, (0,), "")
    with pytest.raises(InvalidArgument):
        resolve_user(tmp_path, None, "app")


def test_symlinked_passwd_stays_inside_rootfs(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "real").mkdir()
    (rootfs / "real/passwd").write_text("good:x:5:5::/:/bin/sh\n")
    # An absolute link means "inside the rootfs", a relative one may not climb out either.
    (rootfs / "etc/passwd").symlink_to("/real/passwd")
    assert resolve_user(rootfs, None, "good").uid == 5
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("../../../host/etc/passwd")
    with pytest.raises(InvalidArgument):
        resolve_user(rootfs, None, "evil")
    assert rootfs_path(rootfs, "/etc/../../x") == rootfs / "x"


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidArgument, match="too many symlinks"):
        resolve_user(tmp_path, None, "app")
