"""Output files never damage anything: only regular files are replaced (symlinks written through), devices,
FIFOs, sockets and folders are refused before any work, and a failed write leaves the old file as it was.

Everything is created in tmp_path; the real /dev is only ever looked at (stat), never written.
"""

import errno
import os
import socket
import stat
import tempfile

import pytest

import fpsim._files as files
from fpsim._files import atomic_write, check_output_path


def write_text(text):
    return lambda file: file.write(text)


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".fpsim-")]


@pytest.fixture(params=["node", "stand-in"])
def device(request, tmp_path, monkeypatch):
    """A character device node in tmp_path (the always-full device, 1:7); and, as where creating one is not
    permitted, a regular file that `_files` sees as one: the refusal is the same code either way."""
    path = tmp_path / "full"
    try:
        if request.param == "stand-in":
            raise PermissionError
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        path.write_text("stand-in")
        real_mode = files._mode
        stand_in = stat.S_IFCHR | 0o666
        monkeypatch.setattr(files, "_mode", lambda t, *a: stand_in if t == path else real_mode(t, *a))
    return path


@pytest.fixture
def umask():
    """Set the process umask for one test (fpsim reads none: the kernel applies it), restoring it after."""
    saved = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027, 0o000])
def test_a_new_file_gets_the_permissions_the_umask_leaves(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "new.json"
    atomic_write(path, write_text("x"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # as open() and touch create files
    (tmp_path / "by-open.json").write_text("x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "by-open.json").stat().st_mode)
    path.chmod(0o640)
    atomic_write(path, write_text("y"))  # an existing file keeps its own permissions, whatever the umask
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_new_file_is_created_and_a_regular_file_replaced_keeping_its_permissions(tmp_path, umask):
    path = tmp_path / "out.json"
    assert atomic_write(path, write_text("first")) == path
    assert path.read_text() == "first" and stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    if os.geteuid() == 0:  # root replacing someone else's file hands it back to its owner
        os.chown(path, 1234, 1234)
    atomic_write(path, write_text("second"))
    assert path.read_text() == "second" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.geteuid() != 0 or (path.stat().st_uid, path.stat().st_gid) == (1234, 1234)
    atomic_write(path, lambda file: file.write(b"\x00\xff"), binary=True)
    assert path.read_bytes() == b"\x00\xff" and leftovers(tmp_path) == []


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    assert check_output_path(link) == target
    atomic_write(link, write_text("new"))
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "created.json")
    atomic_write(dangling, write_text("made"))
    assert dangling.is_symlink() and (tmp_path / "created.json").read_text() == "made"


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ValueError, match="symlink loop"):
        atomic_write(tmp_path / "a", write_text("x"))
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


def test_a_device_is_refused_and_left_alone(device):
    before = os.lstat(device)
    for attempt in (lambda: check_output_path(device, argument="--out"), lambda: atomic_write(device, write_text("x"))):
        with pytest.raises(ValueError, match=r"not a regular file \(a device, FIFO or socket\)"):
            attempt()
    after = os.lstat(device)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert leftovers(device.parent) == []


def test_a_symlink_to_a_device_is_refused(device, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(device)
    with pytest.raises(ValueError, match=f"--out '{link}' is not a regular file"):
        atomic_write(link, write_text("x"), argument="--out")
    assert link.is_symlink()


def test_real_system_devices_are_refused_by_the_check_alone():
    # only stat is called on /dev/null: the refusal comes before the folder probe and any write
    with pytest.raises(ValueError, match="'/dev/null' is not a regular file"):
        check_output_path("/dev/null", argument="--out")


def test_a_fifo_and_a_socket_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        for path in (fifo, tmp_path / "sock"):
            with pytest.raises(ValueError, match="is not a regular file"):
                atomic_write(path, write_text("x"))
        assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISSOCK((tmp_path / "sock").lstat().st_mode)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"-o '{tmp_path}' is a folder: name a file inside it"):
        atomic_write(tmp_path, write_text("x"), argument="-o")


def test_a_read_only_file_is_refused(tmp_path):
    path = tmp_path / "keep.json"
    path.write_text("keep")
    path.chmod(0o444)
    with pytest.raises(ValueError, match="is read-only: make it writable"):
        atomic_write(path, write_text("x"))
    assert path.read_text() == "keep"


def test_a_folder_where_files_cannot_be_created_is_refused_naming_the_users_path(tmp_path, monkeypatch):
    # root ignores permission bits, so a read-only mount is simulated where mkstemp fails as it would there
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError, match="cannot create files") as caught:
        check_output_path(tmp_path / "runs.json", argument="--out")
    assert str(caught.value) == (
        f"--out '{tmp_path / 'runs.json'}': cannot create files in '{tmp_path}' (Read-only file system)"
    )


def test_a_virtual_file_system_is_refused():
    with pytest.raises(ValueError, match=r"'/proc/fpsim-test.json': cannot create files in '/proc'"):
        check_output_path("/proc/fpsim-test.json")


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_leaves_the_old_file_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old picture")

    def half_then_full(file):
        file.write(b"new pic")
        if where == "write":
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "fsync":  # the kernel may report a full disk only when the data is flushed
        monkeypatch.setattr(os, "fsync", full_fsync)
    with pytest.raises(OSError, match="No space left") as caught:
        atomic_write(path, half_then_full, binary=True)
    assert caught.value.errno == errno.ENOSPC and ".fpsim-" not in str(caught.value)
    assert caught.value.strerror == f"cannot write '{path}': No space left on device"
    assert path.read_bytes() == b"old picture" and leftovers(tmp_path) == []


def test_an_interrupted_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text("old")

    def interrupted(file):
        file.write("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_text() == "old" and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("", ValueError, "--out must name a file; got an empty path"),
        ("   ", ValueError, "--out must name a file; got an empty path"),
        ("x" * 300 + ".json", ValueError, r"--out is too long \(305 characters"),
        ("/tmp/" + "d/" * 2100 + "x.json", ValueError, "--out is too long"),
        (b"runs.json", TypeError, r"--out must be a file path \(str or os.PathLike\); got bytes"),
        (3, TypeError, r"--out must be a file path \(str or os.PathLike\); got int"),
    ],
)
def test_bad_paths_are_refused(path, error, message):
    with pytest.raises(error, match=message):
        check_output_path(path, argument="--out")


def test_suffix_and_folder_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"-o must end in \.png, \.svg; got 'plot\.jpg'"):
        check_output_path("plot.jpg", suffixes=(".png", ".svg"), argument="-o")
    assert check_output_path(tmp_path / "PLOT.PNG", suffixes=(".png",)) == tmp_path / "PLOT.PNG"
    with pytest.raises(ValueError, match=r"the folder .* does not exist; create it first"):
        check_output_path(tmp_path / "missing" / "runs.json")
    with pytest.raises(ValueError, match=r"must end in \.json"):
        atomic_write(tmp_path / "runs.txt", write_text("x"), suffixes=(".json",))
    assert list(tmp_path.iterdir()) == []  # neither a check nor a refused write leaves anything behind
