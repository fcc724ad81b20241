"""Run jobs that kill themselves with SIGKILL at a fault point (``CORRFLOW_FAULT``), cheaply.

    python kill_driver.py JOBS.json RESULTS.json

``JOBS.json``: a list of ``{"fault": "append:data@2", "argv": [...corrflow CLI args...]}`` or
``{"fault": ..., "checkpoint": DIR, "epoch": n}`` (write checkpoint ``n`` of a generic ``(meta, arrays)`` pair
into ``DIR``).  corrflow is imported once; every job runs in a child forked from this process, which
kills itself (``os.kill(getpid(), SIGKILL)``, exactly like ``kill -9``) at the named point.  The parent
never touches JAX or zarr before forking (both start threads only when first used), so each child
starts them fresh.  ``RESULTS.json`` gets each child's wait status: ``-9`` means it died at the fault point.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    jobs = json.loads(open(sys.argv[1]).read())
    import numpy as np  # noqa: F401  (imported once, before forking)

    import corrflow.cli  # noqa: F401
    import corrflow.store.checkpoints  # noqa: F401

    results = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.environ["CORRFLOW_FAULT"] = job["fault"]
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                if "argv" in job:
                    from corrflow.cli import app

                    try:
                        app(job["argv"], standalone_mode=False)
                        code = 0
                    except SystemExit as exc:
                        code = int(exc.code or 0)
                else:
                    from corrflow.store.checkpoints import write_checkpoint

                    n = int(job["epoch"])
                    write_checkpoint(job["checkpoint"], {"epoch": n}, {"w": np.full(1000, float(n))})
                    code = 0
            except BaseException as exc:  # noqa: BLE001 - reported through the exit status
                print(f"job {job} failed: {exc!r}", file=sys.stderr)
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        results.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
