"""SLURM launcher with a preflight: fail with a clear message before anything is submitted.

The presets in ablations/conf/hydra/launcher/ (slurm, slurm_8gpu, slurm_2node) extend
hydra-submitit-launcher's `submitit_slurm` and point `_target_` here (Hydra only instantiates
launchers from the `hydra_plugins` namespace, hence this location; the editable install puts
ablations/plugins on sys.path, for submitted jobs too, which unpickle this launcher). `launch()` checks that SLURM's tools are on
PATH and that the partition exists, then hands over to the plugin unchanged (job arrays,
`array_parallelism`, requeue on preemption/timeout through its `checkpoint()`).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Optional, Sequence

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _Plugin

REQUIRED_TOOLS = ("sbatch", "srun")


class SlurmPreflightError(RuntimeError):
    """The SLURM launcher cannot work here; nothing was submitted."""


def preflight(partition: Optional[str]) -> None:
    """Raise SlurmPreflightError unless sbatch/srun are on PATH and `partition` is known to sinfo."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SlurmPreflightError(
            f"hydra/launcher=slurm needs SLURM's {' and '.join(missing)} on PATH and this machine "
            f"has none: nothing was submitted. Run the same command from a SLURM login node, or "
            f"drop the launcher override (or use hydra/launcher=submitit_local) to run here.")
    if not partition or shutil.which("sinfo") is None:
        return
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    known = sorted(set(out.stdout.split()))
    if out.returncode == 0 and known and partition not in known:
        raise SlurmPreflightError(
            f"hydra.launcher.partition={partition!r} is not a partition of this cluster (sinfo "
            f"lists {', '.join(known)}): nothing was submitted. Pass hydra.launcher.partition=NAME.")


class SlurmLauncher(_Plugin):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        preflight(self.params.get("partition"))
        return super().launch(job_overrides, initial_job_idx)
