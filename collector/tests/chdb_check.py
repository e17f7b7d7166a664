#!/usr/bin/env python3
"""Runs livehead's ClickHouse statements on chdb (a current ClickHouse, in-process).

Usage: chdb_check.py STEPS.json

STEPS.json is written by collector/tests/chdb_schema.rs: {"steps": [...]}, each step
{"note": str, "sql": str} plus optional checks on the TabSeparated answer:
"expect" (equal), "expect_contains" and "expect_absent" (substrings). Steps run in
order in one session (a temporary directory); the first failure stops the run.
Prints "version: X" (the server's version) first, and "ok: N steps" at the end.
Exit status: 0 ok, 1 a step failed, 2 usage or chdb missing.
"""

import json
import shutil
import sys
import tempfile


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from chdb import session
    except ImportError as err:
        print(f"chdb is missing ({err}): install chdb with `pip install chdb`")
        return 2

    with open(sys.argv[1], encoding="utf-8") as f:
        steps = json.load(f)["steps"]

    path = tempfile.mkdtemp(prefix="livehead-chdb-")
    sess = session.Session(path)
    try:
        version = str(sess.query("SELECT version()", "TSV")).strip()
        print(f"version: {version}")
        for i, step in enumerate(steps):
            note, sql = step.get("note", ""), step["sql"]
            try:
                out = str(sess.query(sql, "TSV"))
            except Exception as err:  # chdb raises its own error types
                print(f"step {i} ({note}) failed:\n{sql}\n--> {err}")
                return 1
            problem = None
            if "expect" in step and out != step["expect"]:
                problem = f"expected {step['expect']!r}"
            elif "expect_contains" in step and step["expect_contains"] not in out:
                problem = f"expected it to contain {step['expect_contains']!r}"
            elif "expect_absent" in step and step["expect_absent"] in out:
                problem = f"expected it not to contain {step['expect_absent']!r}"
            if problem:
                print(f"step {i} ({note}):\n{sql}\n--> got {out!r}, {problem}")
                return 1
        print(f"ok: {len(steps)} steps")
        return 0
    finally:
        sess.close()
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
