"""Slurm, three ways (sbatch/sacct, submitit, pyslurm), sharing what Slurm itself defines: its job ids
(`ids`), its state words (`states`), a request's limits (`limits`)."""

from pipeline.executors.slurm.ids import ArrayPart, array_chunks, parse_parts, stored_id
from pipeline.executors.slurm.sbatch import SlurmExecutor
from pipeline.executors.slurm.states import STATE_MAP, parse_sacct, parse_squeue, slurm_state

__all__ = ["STATE_MAP", "ArrayPart", "SlurmExecutor", "array_chunks", "parse_parts", "parse_sacct", "parse_squeue",
           "slurm_state", "stored_id"]
