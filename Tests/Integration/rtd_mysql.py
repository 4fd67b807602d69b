"""The throwaway MariaDB the test command starts (scripts/lib/mariadb.sh), driven through the
`mariadb` command-line client, as an operator would: fresh databases per test, SQL checks, and
stopping / restarting the server process for fault-injection tests."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
MARIADB_SH = ROOT / "scripts" / "lib" / "mariadb.sh"


class MariaDB:
    def __init__(self, url: str, data_dir: Optional[str]):
        m = re.match(r"^mysql://([^:@]+):([^@]*)@([^:/]+):(\d+)/(\w+)$", url)
        if not m:
            raise ValueError(f"unsupported RTD_TEST_MYSQL {url!r}")
        self.user, self.password, self.host, self.port, self.default_db = m.group(1), m.group(2), m.group(3), int(m.group(4)), m.group(5)
        self.data_dir = data_dir

    def url_for(self, db: str, **params: str) -> str:
        q = ("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else ""
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}/{db}{q}"

    def sql(self, query: str, db: Optional[str] = None, timeout: float = 60) -> list[list[Optional[str]]]:
        cmd = ["mariadb", "--no-defaults", "-h", self.host, "-P", str(self.port), "-u", self.user, f"-p{self.password}",
               "-N", "-B", "-e", query]
        if db:
            cmd.append(db)
        out = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"SQL failed ({out.returncode}): {query}\n{out.stderr.decode(errors='replace')}")
        rows = []
        for line in out.stdout.decode().splitlines():
            rows.append([None if c == "NULL" else c for c in line.split("\t")])
        return rows

    def scalar(self, query: str, db: Optional[str] = None) -> Optional[str]:
        rows = self.sql(query, db)
        return rows[0][0] if rows and rows[0] else None

    def fresh_db(self) -> str:
        name = "rtd_it_" + uuid.uuid4().hex[:12]
        self.sql(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        try:
            self.sql(f"DROP DATABASE IF EXISTS {name}")
        except Exception:
            pass

    def alive(self) -> bool:
        try:
            self.sql("SELECT 1", timeout=5)
            return True
        except Exception:
            return False

    def pause(self, kill: bool = False) -> None:
        """Stops the database server process (data kept)."""
        self._require_dir()
        subprocess.run(["bash", str(MARIADB_SH), "pause", self.data_dir] + (["--kill"] if kill else []), check=True, timeout=120)

    def resume(self) -> None:
        self._require_dir()
        subprocess.run(["bash", str(MARIADB_SH), "resume", self.data_dir], check=True, timeout=120)

    def _require_dir(self) -> None:
        if not self.data_dir:
            raise RuntimeError("RTD_MARIADB_DIR is not set: this test needs the throwaway server from scripts/lib/mariadb.sh")


def from_env() -> Optional[MariaDB]:
    url = os.environ.get("RTD_TEST_MYSQL")
    if not url:
        return None
    return MariaDB(url, os.environ.get("RTD_MARIADB_DIR"))
