"""Throwaway database servers for the tests: Debian's PostgreSQL on loopback, started once per test run."""
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.helpers import free_port

NEED_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"  # CI installs Debian's postgresql and sets this


def postgres_binaries():
    """The folder of Debian's PostgreSQL server programs (initdb, pg_ctl), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class Postgres:
    """A PostgreSQL server in a temporary folder, on a free loopback port; `database()` gives a fresh database URL."""

    def __init__(self):
        self.bin = postgres_binaries()
        if self.bin is None:
            if NEED_POSTGRES:
                pytest.fail("PostgreSQL is required (REQUIRE_POSTGRES=1) but Debian's postgresql is not installed")
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.folder = tempfile.mkdtemp(prefix="cifarlab-pg-")
        self.port, self.count = free_port(), itertools.count()
        self.user = None
        if os.geteuid() == 0:  # initdb refuses to run as root: the server runs as Debian's postgres user
            self.user = pwd.getpwnam("postgres")
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        data = os.path.join(self.folder, "data")
        self.run("initdb", "-D", data, "-A", "trust", "-U", "cifarlab", "--no-sync", "-E", "UTF8")
        self.run("pg_ctl", "-D", data, "-w", "-l", os.path.join(self.folder, "log"), "-o",
                 f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -F", "start")
        self.data = data

    def run(self, program, *args):
        command = [os.path.join(self.bin, program), *args]
        if self.user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd="/")

    def url(self, database="postgres"):
        return f"postgresql+psycopg://cifarlab@127.0.0.1:{self.port}/{database}"

    def database(self):
        """The URL of a new, empty database."""
        import psycopg

        name = f"test_{next(self.count)}"
        with psycopg.connect(f"postgresql://cifarlab@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
