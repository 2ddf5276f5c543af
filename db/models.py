"""The schema: Brain-Score's tables (user, submission, model, benchmark type/instance, score)
plus a run, a job per scored pair, and provenance on every score."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.states import RunStatus, State


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A submitter: whoever added a plugin, identified by email."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")


class Run(Base):
    """One invocation of `score-plugins run`: a Jenkins build, an admin's sbatch, a developer's test."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.PENDING)
    repo: Mapped[str] = mapped_column(Text, default="")
    base_commit: Mapped[str | None] = mapped_column(String(64))
    head_commit: Mapped[str] = mapped_column(String(64))
    domain: Mapped[str] = mapped_column(String(100))
    executor: Mapped[str] = mapped_column(String(32))
    run_dir: Mapped[str] = mapped_column(Text, default="")
    jenkins_build: Mapped[str | None] = mapped_column(String(200))
    build_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sandbox: Mapped[str | None] = mapped_column(String(16))  # bwrap, or off: plugin code ran unconfined
    memory_limit: Mapped[str | None] = mapped_column(String(64))  # local: cgroup v1/v2, or rlimit (RLIMIT_DATA only)
    network: Mapped[str | None] = mapped_column(String(16))  # on (the outside, not the node) | off | host
    jobs: Mapped[list[Job]] = relationship(back_populates="run")


class Submission(Base):
    """What one submitter hears about in one run (Brain-Score's submission row)."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("run_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    jenkins_build: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default="PENDING")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(200), unique=True)
    plugin: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    public: Mapped[bool] = mapped_column(Boolean, default=True)


class BenchmarkType(Base):
    __tablename__ = "benchmark_types"
    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(200), unique=True)
    plugin: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    parent: Mapped[str | None] = mapped_column(String(200))  # as its plugin declares it (`parent=`), latest run
    parent_note: Mapped[str | None] = mapped_column(Text)  # why the parent could not be read, when it could not
    runtime_identifier: Mapped[str | None] = mapped_column(String(200))  # its `identifier=`: brain-score.org's key
    visible: Mapped[bool | None] = mapped_column(Boolean)  # set by an admin (None: the board's rules decide)


class BenchmarkInstance(Base):
    """A benchmark type at one code version (its code hash), with its ceiling."""

    __tablename__ = "benchmark_instances"
    __table_args__ = (UniqueConstraint("benchmark_type_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    benchmark_type_id: Mapped[int] = mapped_column(ForeignKey("benchmark_types.id"))
    version: Mapped[str] = mapped_column(String(64))
    ceiling: Mapped[float | None] = mapped_column(Float)
    declared_version: Mapped[int | None] = mapped_column(Integer)  # Brain-Score's `version=` (None: unread)


class ScoreColumns:
    """What a score records, in force (`scores`) or not any more (`score_history`): one list for both tables."""

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    benchmark_instance_id: Mapped[int] = mapped_column(ForeignKey("benchmark_instances.id"))
    pair_key: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    score_raw: Mapped[float | None] = mapped_column(Float)
    score_ceiled: Mapped[float | None] = mapped_column(Float)
    error: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)
    start_timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    commit: Mapped[str] = mapped_column(String(64))
    model_code_hash: Mapped[str] = mapped_column(String(64))
    benchmark_code_hash: Mapped[str] = mapped_column(String(64))
    lock_hash: Mapped[str] = mapped_column(String(64))
    env_hash: Mapped[str] = mapped_column(String(64))
    executor: Mapped[str] = mapped_column(String(32), default="")
    job_id: Mapped[str] = mapped_column(String(64), default="")
    array_index: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(200), default="")
    elapsed_seconds: Mapped[float | None] = mapped_column(Float)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)


class Score(ScoreColumns, Base):
    """One successful score, with everything needed to trace and re-run it."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("model_id", "benchmark_instance_id", "pair_key", name="uq_score_key"),
                      {"sqlite_autoincrement": True})  # ids are never reused (a removed score keeps its id)
    id: Mapped[int] = mapped_column(primary_key=True)


class Job(Base):
    """One pair's execution in one run: where it ran, how it ended, and why."""

    __tablename__ = "jobs"
    # One coordinator per pair: a pair can be PENDING or RUNNING in one run only. Claiming it is the insert
    # of its PENDING row, which this partial unique index makes atomic (Postgres and SQLite alike).
    __table_args__ = (UniqueConstraint("run_id", "pair_key"),
                      Index("uq_jobs_pair_in_flight", "pair_key", unique=True,
                            postgresql_where=text("state IN ('PENDING', 'RUNNING')"),
                            sqlite_where=text("state IN ('PENDING', 'RUNNING')")))
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    pair_key: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    benchmark: Mapped[str] = mapped_column(String(200))
    submitters: Mapped[list] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(32), default=State.PENDING)
    stage: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    slurm_job_id: Mapped[str | None] = mapped_column(String(64))
    array_index: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    log_path: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run: Mapped[Run] = relationship(back_populates="jobs")



class ScoreHistory(ScoreColumns, Base):
    """A score no longer in force: replaced by a forced re-score of its pair key, or removed by an
    administrator (`reason` says which, and who). Its id is the id it had in `scores`."""

    __tablename__ = "score_history"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    superseded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")


class Attempt(Base):
    """One try of one pair: on which tier, what it asked for, what it used, how it ended (failure kind), where.
    A pair escalated after running out of memory has one row per tier it tried."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("run_id", "pair_key", "attempt", name="uq_attempt"),
                      Index("ix_attempts_model_benchmark", "model", "benchmark"))
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    pair_key: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    benchmark: Mapped[str] = mapped_column(String(200))
    submitters: Mapped[list] = mapped_column(JSON, default=list)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    tier: Mapped[str] = mapped_column(String(64))
    req_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    req_time_minutes: Mapped[int | None] = mapped_column(Integer)
    req_gpus: Mapped[int] = mapped_column(Integer, default=0)
    req_cpus: Mapped[int] = mapped_column(Integer, default=1)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    elapsed_seconds: Mapped[float | None] = mapped_column(Float)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(64))
    array_index: Mapped[int | None] = mapped_column(Integer)
    commit: Mapped[str | None] = mapped_column(String(64))
    model_code_hash: Mapped[str | None] = mapped_column(String(64))
    benchmark_code_hash: Mapped[str | None] = mapped_column(String(64))
    escalated_to: Mapped[str | None] = mapped_column(String(64))  # the tier of the next attempt, if any
    # its GPUs (migration 0010): model, how many it was given, on how many it allocated memory, its peak GPU
    # memory (NVML, sampled; NULL: not measured, never a made-up 0) and the GPU memory per GPU of its tier
    gpu_model: Mapped[str | None] = mapped_column(String(200))
    gpu_count: Mapped[int | None] = mapped_column(Integer)
    gpus_used: Mapped[int | None] = mapped_column(Integer)
    max_gpu_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    req_gpu_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)


class PluginHold(Base):
    """A commit that changed a plugin folder (or moved it, or re-registered one of its ids) by an author who is
    not among its owners: the pairs that use that folder are held, not scored, until an administrator approves
    it (`score-plugins approve`), recorded here with who and when. One row per folder and commit."""

    __tablename__ = "plugin_holds"
    __table_args__ = (UniqueConstraint("domain", "plugin_type", "plugin", "commit", name="uq_plugin_hold"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(100))
    plugin_type: Mapped[str] = mapped_column(String(16))
    plugin: Mapped[str] = mapped_column(String(100))
    commit: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(320))
    owners: Mapped[list] = mapped_column(JSON, default=list)  # who owned the folder when the change was found
    reason: Mapped[str] = mapped_column(Text, default="")
    base_commit: Mapped[str | None] = mapped_column(String(64))
    head_commit: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approved_by: Mapped[str | None] = mapped_column(String(200))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approval_note: Mapped[str | None] = mapped_column(Text)
    owner_added: Mapped[bool] = mapped_column(Boolean, default=False)  # approved as a new owner of the folder


class DatabaseIdentity(Base):
    """Which profile this database is (prod, dev, test, local), and a random id of its own: written once, when the
    database is created or adopted (`db upgrade`), and checked by every connection, so a dev or test connection to
    prod's database is refused however its URL is spelled. One row."""

    __tablename__ = "database_identity"
    __table_args__ = (CheckConstraint("id = 1", name="ck_database_identity_one_row"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # always 1: one row
    profile: Mapped[str] = mapped_column(String(32))
    database_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)  # recorded over data an older version wrote


class ProcessedCommit(Base):
    """The last commit the pipeline processed for a repository (this database's profile): the base of the next
    change-driven build, whatever Jenkins' last green build was."""

    __tablename__ = "processed_commits"
    repository: Mapped[str] = mapped_column(String(500), primary_key=True)
    commit: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    jenkins_build: Mapped[str | None] = mapped_column(String(200))
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MailedFailure(Base):
    """A pair key's failure told to one person: a later run that fails the same key (same code, same lock) lists it
    in the console and the run record, and mails nobody about it again."""

    __tablename__ = "mailed_failures"
    pair_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    mailed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
