"""Plugin environments: declared requirements -> lockfile -> solved hash -> built once, reused."""

from envs.lock import EnvError, EnvSpec, Lock, lock_environment

__all__ = ["EnvError", "EnvSpec", "Lock", "lock_environment"]
