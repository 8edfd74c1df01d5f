"""The secret scrubber masks secrets where they stand as values, not every equal word."""

from __future__ import annotations

import pytest

from marketdata.redact import register_secret, scrub


@pytest.fixture(autouse=True)
def secrets() -> None:
    for secret in ("running", "s3cretpw", "XXXXtokenXXXX", "p@ss/w:rd"):
        register_secret(secret)


def test_a_password_that_is_a_plain_word_leaves_that_word_alone_in_prose():
    message = "127.0.0.1:5432 refused the connection: is PostgreSQL running?"
    assert scrub(message) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://md:running@db:5432/md", "postgresql://md:***@db:5432/md"),
        ("DATABASE_URL=running", "DATABASE_URL=***"),
        ('{"password": "running"}', '{"password": "***"}'),
        ("Authorization: Bearer running", "Authorization: Bearer ***"),
        ("https://hooks.example/T0/XXXXtokenXXXX", "https://hooks.example/T0/***"),
    ],
)
def test_a_registered_secret_is_masked_where_it_stands_as_a_value(text, expected):
    assert scrub(text) == expected


def test_a_token_like_secret_is_masked_wherever_it_is_a_whole_word():
    assert scrub("login s3cretpw refused, token XXXXtokenXXXX") == "login *** refused, token ***"
    assert scrub("not_s3cretpw_x") == "not_s3cretpw_x"  # part of another word: not that secret


def test_url_passwords_and_secret_query_values_are_masked_unregistered():
    text = "redis://:other-pass@cache:6379/0 and https://x/api?apikey=abc123&s=aapl.us"
    assert scrub(text) == "redis://:***@cache:6379/0 and https://x/api?apikey=***&s=aapl.us"


def test_a_percent_encoded_secret_is_masked_too():
    assert scrub("postgresql://u:p%40ss%2Fw%3Ard@h/db") == "postgresql://u:***@h/db"
    assert scrub("password=p%40ss%2Fw%3Ard") == "password=***"
