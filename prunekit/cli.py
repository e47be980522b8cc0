"""`prune-run`: compose the config (Hydra) -> validate -> run -> exit code.

Every job of a multirun runs to its own end: a failing job writes `status: failed` with the reason
into its summary.json, says so in one line, and the sweep goes on (Hydra would otherwise stop the
sweep and skip its end-of-sweep callbacks). The process exits non-zero if any job failed.
Bad input never shows a traceback; set HYDRA_FULL_ERROR=1 to see one for any failure.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from prunekit.config import ConfigError

FAILED: List[str] = []


def error_line(msg: str) -> None:
    print(f"prune-run: error: {msg}", file=sys.stderr, flush=True)


@hydra.main(version_base="1.3", config_path="pkg://prunekit.conf", config_name="config")
def task(cfg: DictConfig) -> None:
    from prunekit.runner import run  # torch is imported here, not for --help

    out_dir = HydraConfig.get().runtime.output_dir
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        run(cfg, out_dir)
    except KeyboardInterrupt:
        error_line(f"interrupted; partial results in {out_dir}")
        FAILED.append(out_dir)
        raise SystemExit(130)
    except ConfigError as e:
        if full_error:
            raise
        error_line(str(e))
        FAILED.append(out_dir)
    except Exception as e:  # a failure inside the run: say it in one line, keep the sweep going
        if full_error:
            raise
        logging.getLogger("prunekit.trace").error("run failed", exc_info=True)  # log file only
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        error_line(f"run failed: {type(e).__name__}: {first} (details: {out_dir}/prune-run.log)")
        FAILED.append(out_dir)


def main() -> None:
    task()
    if FAILED:
        sys.exit(1)


if __name__ == "__main__":
    main()
