"""The database room on real PostgreSQL (and SQLite): migrations, models, constraints,
profiles and their guards, redaction, batch ingest."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import migrate
from db.ingest import ingest_results
from db.models import (BenchmarkInstance, BenchmarkType, Job, Model, Run, Score, Submission, User)
from db.profiles import ProfileError, resolve_profile
from db.queries import leaderboard_rows, scored_keys
from pipeline.errors import BadInput

TABLES = {"users", "runs", "submissions", "models", "benchmark_types", "benchmark_instances", "scores", "jobs"}


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path}/t.db"
    engine = create_engine(url)
    yield engine
    engine.dispose()


def test_migrations_up_and_down(engine):
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    assert TABLES <= set(inspect(engine).get_table_names())
    migrate.downgrade(engine, "base")
    assert migrate.current(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert migrate.is_current(engine)


def test_every_model_round_trips_and_the_score_key_is_unique(engine):
    migrate.upgrade(engine)
    now = datetime.now(timezone.utc)
    with Session(engine) as s, s.begin():
        user = User(email="ada@example.org", display_name="Ada Lovelace ünicode")
        s.add(user)
        s.flush()
        run = Run(id="r1", head_commit="c" * 40, domain="d", executor="local", jenkins_build="jenkins-1")
        model = Model(identifier="m1", plugin="m", domain="d", owner_id=user.id, public=False)
        btype = BenchmarkType(identifier="b1", plugin="b", domain="d", owner_id=user.id)
        s.add_all([run, model, btype])
        s.flush()
        inst = BenchmarkInstance(benchmark_type_id=btype.id, version="v1", ceiling=0.8)
        s.add_all([inst, Submission(run_id=run.id, user_id=user.id, status="DONE", jenkins_build="jenkins-1")])
        s.flush()
        s.add(Score(model_id=model.id, benchmark_instance_id=inst.id, pair_key="k1", run_id=run.id, score_raw=0.4,
                    score_ceiled=0.5, commit="c" * 40, model_code_hash="mh", benchmark_code_hash="bh",
                    lock_hash="lh", env_hash="eh", job_id="123", array_index=2, node="n1",
                    start_timestamp=now, end_timestamp=now, elapsed_seconds=1.5, max_rss_bytes=5 * 2**30))
        s.add(Job(run_id=run.id, pair_key="k1", model="m1", benchmark="b1", submitters=["ada@example.org"],
                  state="COMPLETED", slurm_job_id="123", array_index=2, node="n1", attempt=1, log_tail="ok"))
    with Session(engine) as s:
        score = s.scalars(select(Score)).one()
        assert (score.score_ceiled, score.max_rss_bytes, score.array_index) == (0.5, 5 * 2**30, 2)
        assert s.scalars(select(User)).one().display_name.endswith("ünicode")
        assert s.scalars(select(Job)).one().submitters == ["ada@example.org"]
        assert s.scalars(select(Model)).one().public is False
        assert s.scalars(select(BenchmarkInstance)).one().ceiling == 0.8
        assert s.scalars(select(Submission)).one().status == "DONE"
        model_id, inst_id = score.model_id, score.benchmark_instance_id
    with pytest.raises(IntegrityError):
        with Session(engine) as s, s.begin():
            s.add(Score(model_id=model_id, benchmark_instance_id=inst_id, pair_key="k1", commit="c", model_code_hash="m",
                        benchmark_code_hash="b", lock_hash="l", env_hash="e"))


def result(i: int, run_id: str | None = None, status: str = "ok") -> dict:
    return {"pair_key": f"key{i:06d}", "run_id": run_id, "model": f"model-{i % 50}", "benchmark": f"bench-{i % 7}",
            "model_plugin": "mp", "benchmark_plugin": "bp", "domain": "d", "status": status,
            "state": "COMPLETED" if status == "ok" else "FAILED", "stage": None if status == "ok" else "score",
            "reason": None if status == "ok" else "boom", "score_raw": 0.5, "score_ceiled": 0.5, "ceiling": 1.0,
            "commit": "c" * 40, "model_code_hash": "mh", "benchmark_code_hash": f"bh{i % 7}", "lock_hash": "lh",
            "env_hash": "eh", "job_id": "42", "array_index": i, "node": "n", "executor": "local",
            "model_owner": "owner@example.org", "benchmark_owner": "bench@example.org",
            "started_at": "2026-11-23T00:00:00+00:00", "ended_at": "2026-11-23T00:00:01+00:00"}


def test_batch_ingest_is_idempotent(engine):
    migrate.upgrade(engine)
    with Session(engine) as s, s.begin():
        s.add(Run(id="run-a", head_commit="c", domain="d", executor="local"))
    rows = [result(i, "run-a") for i in range(500)] + [result(1000 + i, "run-a", "error") for i in range(20)]
    with Session(engine) as s, s.begin():
        counts = ingest_results(s, rows, batch=128)
    assert counts == {"scores": 500, "duplicates": 0, "failures": 20}
    with Session(engine) as s, s.begin():
        again = ingest_results(s, rows, batch=97)
    assert again == {"scores": 0, "duplicates": 500, "failures": 20}
    with Session(engine) as s:
        assert len(s.scalars(select(Score)).all()) == 500
        assert len(s.scalars(select(Job)).all()) == 520
        assert len(s.scalars(select(Model)).all()) == 50
        assert s.scalars(select(Job).where(Job.pair_key == "key001005")).one().reason == "boom"
        assert scored_keys(s, ["key000001", "key001001", "nope"]) == {"key000001"}
        assert len(leaderboard_rows(s)) == 50 * 7


# --- profiles ------------------------------------------------------------------------------------------------

def secrets_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secrets.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_profile_selection_order_and_guards(tmp_path):
    state = tmp_path / ".score-plugins"
    local = resolve_profile("local", environ={}, state_dir=state)
    assert local.url.drivername == "sqlite" and local.url.database.endswith(".score-plugins/local.db")

    path = secrets_file(tmp_path, '[db]\ndev = "postgresql://u:filepw@dbhost/devdb"\n'
                                  'prod = "postgresql://u:prodpw@prodhost/proddb"\n')
    env = {"SCORE_PLUGINS_SECRETS": str(path)}
    assert resolve_profile("dev", environ=env).url.database == "devdb"
    env_wins = {**env, "SCORE_PLUGINS_DB_DEV": "postgresql://u:envpw@other/envdb"}
    assert resolve_profile("dev", environ=env_wins).url.database == "envdb"

    with pytest.raises(ProfileError, match="--yes-prod"):
        resolve_profile("prod", environ=env)
    assert resolve_profile("prod", environ=env, allow_prod=True).url.host == "prodhost"

    with pytest.raises(ProfileError, match="no database for profile 'test'.*SCORE_PLUGINS_DB_TEST"):
        resolve_profile("test", environ=env)
    same = {**env, "SCORE_PLUGINS_DB_TEST": "postgresql://other:pw@prodhost/proddb"}
    with pytest.raises(ProfileError, match="points at the prod database"):
        resolve_profile("test", environ=same)
    with pytest.raises(ProfileError, match="unknown profile"):
        resolve_profile("staging", environ={})


def test_secrets_file_must_be_0600(tmp_path):
    path = secrets_file(tmp_path, '[db]\ndev = "postgresql://u:pw@h/d"\n', mode=0o644)
    with pytest.raises(ProfileError, match="0644.*must be 0600"):
        resolve_profile("dev", environ={"SCORE_PLUGINS_SECRETS": str(path)})


def test_cli_profiles_on_real_postgres(workspace, pg_url, tmp_path):
    env = workspace.env
    env["SCORE_PLUGINS_DB_TEST"] = pg_url
    assert workspace.cli("db", "upgrade", "--profile", "test", check=True).stdout.strip().endswith(migrate.head())
    current = workspace.json("db", "current", "--profile", "test")
    assert current["current"] == current["head"]
    assert "***" in current["database"] and pg_url.split(":")[2].split("@")[0] not in current["database"]
    # destructive: an explicit target and a confirmation, else nothing happens and it says what it would remove
    proc = workspace.cli("db", "downgrade", "--profile", "test")
    assert proc.returncode == 2 and "--revision" in proc.stderr
    proc = workspace.cli("db", "downgrade", "--profile", "test", "--revision", "base")
    assert proc.returncode == 2 and "every table and every score" in proc.stderr and "--yes" in proc.stderr
    assert workspace.json("db", "current", "--profile", "test")["current"] == current["head"]
    workspace.cli("db", "downgrade", "--profile", "test", "--revision", "base", "--yes", check=True)
    assert workspace.json("db", "current", "--profile", "test")["current"] is None

    # dev job with prod's credentials in its environment cannot reach prod
    env["SCORE_PLUGINS_DB_PROD"] = pg_url
    env["SCORE_PLUGINS_DB_DEV"] = pg_url
    proc = workspace.cli("leaderboard", "--profile", "dev")
    assert proc.returncode == 2 and "points at the prod database" in proc.stderr
    proc = workspace.cli("ingest", "--profile", "prod")  # a write to prod needs the confirmation
    assert proc.returncode == 2 and "--yes-prod" in proc.stderr
    proc = workspace.cli("leaderboard", "--profile", "prod")  # reading it does not (here: schema downgraded above)
    assert "--yes-prod" not in proc.stderr and "db upgrade --profile prod" in proc.stderr


def test_prod_and_dev_are_never_migrated_automatically(workspace, pg_url, postgres):
    """A command on dev or prod whose schema is behind says so and changes nothing; only `db upgrade` migrates
    them (local and test are migrated on first use)."""
    workspace.env["SCORE_PLUGINS_DB_DEV"] = pg_url
    for profile, extra in (("dev", ()), ("prod", ("--yes-prod",))):
        workspace.env[f"SCORE_PLUGINS_DB_{profile.upper()}"] = pg_url if profile == "dev" else postgres.create_database()
        proc = workspace.cli("status", "--profile", profile, *extra)
        assert proc.returncode == 2 and f"db upgrade --profile {profile}" in proc.stderr, proc.stderr
        assert workspace.json("db", "current", "--profile", profile, *extra)["current"] is None  # still empty
    workspace.cli("db", "upgrade", "--profile", "dev", check=True)
    assert workspace.json("db", "current", "--profile", "dev")["current"] == migrate.head()
    workspace.env["SCORE_PLUGINS_DB_TEST"] = postgres.create_database()
    assert workspace.cli("status", "--profile", "test").returncode == 2  # "no runs yet": but migrated on the way
    assert workspace.json("db", "current", "--profile", "test")["current"] == migrate.head()


def test_unreachable_database_exit_3_without_password(workspace, tmp_path):
    password = "s3cret-Pa55word"
    workspace.env["SCORE_PLUGINS_DB_TEST"] = f"postgresql://scorer:{password}@127.0.0.1:9/scores_db"
    for args in (("leaderboard", "--profile", "test"), ("db", "current", "--profile", "test"),
                 ("status", "--profile", "test", "--format", "json")):
        proc = workspace.cli(*args)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "127.0.0.1" in proc.stderr and "scores_db" in proc.stderr
        assert password not in proc.stderr + proc.stdout


def test_run_against_postgres_test_profile(workspace, example_repo, pg_url):
    workspace.env["SCORE_PLUGINS_DB_TEST"] = pg_url
    result = workspace.json("run", "--profile", "test", "--repo", str(example_repo), "--all", "--models", "logreg")
    assert result["states"] == {"COMPLETED": 4}
    board = workspace.json("leaderboard", "--profile", "test")
    assert len(board) == 4 and all(r["job_id"] for r in board)
    again = workspace.json("run", "--profile", "test", "--repo", str(example_repo), "--all", "--models", "logreg")
    assert again["run_id"] is None and again["already_scored"] == 4
    # ingest of the same run folder again adds nothing
    ingest = workspace.json("ingest", "--profile", "test")
    assert ingest["scores"] == 0 and ingest["duplicates"] == 4
    # no password in anything the run wrote
    password = pg_url.split("://", 1)[1].split("@")[0].split(":")[1]
    for path in workspace.state.rglob("*"):
        if path.is_file() and "envs" not in path.parts:
            assert password.encode() not in path.read_bytes(), path


# --- each database knows its profile ------------------------------------------------------------------------

def other_spellings(postgres, url: str) -> list[str]:
    """Prod's database reached three other ways: `localhost` for 127.0.0.1 with the `postgres://` prefix, a query
    parameter, and the server's Unix socket (no host, no port, no password): a URL comparison sees four databases."""
    parsed = make_url(url)
    socket_dir = (postgres.folder / "pgdir").read_text().strip()
    return [f"postgres://{parsed.username}:{parsed.password}@localhost:{parsed.port}/{parsed.database}",
            f"{url}?connect_timeout=5&application_name=dev",
            f"postgresql://{parsed.username}@/{parsed.database}?host={socket_dir}&port={parsed.port}"]


def test_a_dev_connection_to_prods_database_is_refused_however_spelled(workspace, postgres, example_repo):
    prod = postgres.create_database("prod")
    workspace.env["SCORE_PLUGINS_DB_PROD"] = prod
    workspace.cli("db", "upgrade", "--profile", "prod", "--yes-prod", check=True)
    assert workspace.json("db", "current", "--profile", "prod")["identity"]["profile"] == "prod"
    del workspace.env["SCORE_PLUGINS_DB_PROD"]  # as the dev job has it: no prod URL to compare with
    for url in other_spellings(postgres, prod):
        workspace.env["SCORE_PLUGINS_DB_DEV"] = url
        for args in (("run", "--profile", "dev", "--repo", str(example_repo), "--all", "--models", "logreg",
                      "--benchmarks", "iris-accuracy"), ("db", "upgrade", "--profile", "dev", "--adopt")):
            proc = workspace.cli(*args)
            assert proc.returncode == 2, (url, args, proc.stderr)
            assert "is the prod database (recorded in it" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with create_engine(prod).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 0  # nothing written in prod


def test_an_existing_database_is_adopted_only_when_told_and_every_connection_checks(workspace, pg_url, tmp_path):
    engine = create_engine(pg_url)
    migrate.upgrade(engine, "0006")  # a database an older version made, with a run in it
    with engine.begin() as conn:  # the columns of 0006 only: the model knows columns later migrations add
        conn.execute(text("INSERT INTO runs (id, status, repo, head_commit, domain, executor, run_dir, created_at) "
                          "VALUES ('old-run', 'PENDING', '', :c, 'd', 'local', '', now())"), {"c": "c" * 40})
    workspace.env["SCORE_PLUGINS_DB_DEV"] = pg_url
    proc = workspace.cli("db", "upgrade", "--profile", "dev")
    assert proc.returncode == 2 and "holds 1 runs and scores but records no profile" in proc.stderr
    assert "db upgrade --profile dev --adopt" in proc.stderr and migrate.current(engine) == "0006"  # untouched
    workspace.cli("db", "upgrade", "--profile", "dev", "--adopt", check=True)
    found = workspace.json("db", "current", "--profile", "dev")["identity"]
    assert found["profile"] == "dev" and found["adopted"] is True and len(found["database_id"]) == 36
    workspace.env["SCORE_PLUGINS_DB_TEST"] = pg_url  # the test profile (migrated automatically) is refused too
    proc = workspace.cli("status", "--profile", "test")
    assert proc.returncode == 2 and "is the dev database" in proc.stderr
    engine.dispose()
    # a connection the pool opens later reads the identity again: a database swapped under the same URL is refused
    from pipeline.database import open_database

    db = open_database("local", tmp_path / "state")
    sqlite_file = make_url(str(db.engine.url)).database
    with create_engine(f"sqlite:///{sqlite_file}").begin() as conn:
        conn.execute(text("UPDATE database_identity SET database_id = 'another-database'"))
    db.engine.dispose()
    with pytest.raises(BadInput, match="now reaches the local database, id another-, not the database it opened"):
        with db.sessions() as session:
            session.execute(text("SELECT 1"))
    db.close()


def test_config_shows_the_profiles_database_and_mail_and_tells_a_refused_password_from_a_down_server(
        workspace, pg_url):
    from tests.test_notify import closed_port

    password = make_url(pg_url).password
    workspace.env.update({"SCORE_PLUGINS_DB_TEST": pg_url,
                          "SCORE_PLUGINS_SMTP_URL": "smtp://mailer:smtp-secret@mail.example.org:587?starttls=true",
                          "SCORE_PLUGINS_MAIL_ALLOW": "team@example.org"})
    workspace.cli("db", "upgrade", "--profile", "test", check=True)
    shown = workspace.json("config", "--profile", "test")["profile"]
    assert shown["database"]["status"] == "ok" and shown["database"]["identity"]["profile"] == "test"
    assert "***" in shown["database"]["database"] and password not in json.dumps(shown)
    assert shown["mail"]["smtp"] == "smtp://mailer:***@mail.example.org:587?starttls=true"
    assert shown["mail"]["smtp_from"] == "SCORE_PLUGINS_SMTP_URL" and "smtp-secret" not in json.dumps(shown)
    assert shown["mail"]["recipients"].startswith("only team@example.org")  # test does not email submitters
    workspace.env["SCORE_PLUGINS_DB_TEST"] = pg_url.replace(f":{password}@", ":wrong-password@")
    refused = workspace.json("config", "--profile", "test")["profile"]["database"]
    assert refused["status"] == "refused" and "refused the password of user postgres" in refused["detail"]
    proc = workspace.cli("status", "--profile", "test")
    assert proc.returncode == 2 and "is reachable but refused the password" in proc.stderr
    assert "wrong-password" not in proc.stderr
    workspace.env["SCORE_PLUGINS_DB_TEST"] = f"postgresql://postgres:{password}@127.0.0.1:{closed_port()}/x"
    down = workspace.json("config", "--profile", "test")["profile"]["database"]
    assert down["status"] == "unreachable" and "cannot reach the test database x" in down["detail"]
    assert workspace.cli("status", "--profile", "test").returncode == 3
    assert workspace.json("config", "--profile", "prod")["profile"]["mail"]["recipients"] == "every submitter"
