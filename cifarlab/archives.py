"""The files inside a .zip or tar archive (.tar, .tar.gz, .tgz), read in one pass without extracting anything."""
import tarfile
import zipfile
from typing import Callable, NamedTuple


class Member(NamedTuple):
    """One regular file of an archive; read() is valid until the walk moves on to the next member."""
    name: str
    size: int  # bytes once read, as the archive states it
    read: Callable[[], bytes]


def members(path):
    """Yield a Member for every regular file in the archive at path, in archive order; a tar is read as a stream
    (no seeking back through the compression). tarfile/zipfile errors propagate to the caller."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield Member(info.filename, info.file_size, lambda info=info: archive.read(info))
    else:
        with tarfile.open(path, "r|*") as archive:
            for info in archive:
                if info.isfile():
                    yield Member(info.name, info.size, lambda info=info: archive.extractfile(info).read())
