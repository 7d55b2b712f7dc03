"""Executes every notebook in a folder with nbclient, as a user's Jupyter would, and fails on the
first cell that raises. Notebooks are committed without outputs; nothing is written back.

    PYTHONPATH=build/python /usr/bin/python3 tests/run_notebooks.py notebooks [NAME.ipynb ...]
"""

import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    folder = pathlib.Path(argv[1])
    names = argv[2:] or sorted(p.name for p in folder.glob("*.ipynb"))
    if not names:
        print(f"{folder}: no notebooks", file=sys.stderr)
        return 1
    failed = 0
    for name in names:
        path = folder / name
        nb = nbformat.read(path, as_version=4)
        if any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
            print(f"{name}: committed with outputs (clear them before committing)")
            failed += 1
            continue
        started = time.monotonic()
        client = NotebookClient(nb, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}})
        try:
            client.execute()
        except CellExecutionError as e:
            print(f"{name}: FAILED\n{e}")
            failed += 1
            continue
        print(f"{name}: ok in {time.monotonic() - started:.1f} s", flush=True)
    print(f"{len(names) - failed} of {len(names)} notebooks ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
