"""One masking rule and one PostgreSQL spelling for the store, the lease, MLflow and Optuna."""

from __future__ import annotations

import pytest

from quantshift.urls import mask_secrets, postgres_url, strip_password, url_password

PASSWORD = "hunter2-Xq9"
SECRET_URL = f"postgresql+psycopg://quant:{PASSWORD}@db.internal:5432/optuna"
MASKED_URL = "postgresql+psycopg://quant:***@db.internal:5432/optuna"


def test_mask_secrets():
    assert mask_secrets(SECRET_URL) == MASKED_URL
    assert mask_secrets(f"redis://:{PASSWORD}@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_secrets(f"https://h/api?token={PASSWORD}&x=1") == "https://h/api?token=***&x=1"
    assert mask_secrets(f"redis://h/0?pass={PASSWORD}") == "redis://h/0?pass=***"
    assert mask_secrets(f"db {SECRET_URL} and {SECRET_URL}") == f"db {MASKED_URL} and {MASKED_URL}"
    for clean in ("postgresql://quant@db/optuna", "sqlite:////tmp/a:b/mlflow.db", "12:30@noon"):
        assert mask_secrets(clean) == clean


def test_known_secrets_are_masked_wherever_they_appear():
    error = f'connection failed: FATAL: password "{PASSWORD}" rejected'
    assert PASSWORD not in mask_secrets(error, url_password(SECRET_URL))
    assert mask_secrets(error, None, "") == error


def test_url_password_reads_the_user_part_or_the_query():
    assert url_password(SECRET_URL) == PASSWORD
    assert url_password(f"redis://127.0.0.1:6379/0?password={PASSWORD}") == PASSWORD
    assert url_password("postgresql://quant@db/optuna") is None
    assert url_password("redis://[::1") is None  # unparseable: nothing to mask


def test_strip_password_leaves_the_user():
    assert strip_password(SECRET_URL) == "postgresql+psycopg://quant@db.internal:5432/optuna"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgres_url_spells_one_database_for_each_client(scheme):
    url = f"{scheme}://quant@db:5432/optuna"
    assert postgres_url(url, "libpq") == "postgresql://quant@db:5432/optuna"
    assert postgres_url(url, "sqlalchemy") == "postgresql+psycopg://quant@db:5432/optuna"


def test_postgres_url_leaves_other_databases_alone():
    for url in ("sqlite:///a.db", "mysql://u@h/d", "redis://h/0"):
        assert postgres_url(url, "sqlalchemy") == url == postgres_url(url, "libpq")
