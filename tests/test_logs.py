import io
import json
import os
import re

import pytest
import structlog

from supervisor import journal, logs

DB_URL = "postgresql://indico:s3cr3t-pw@db/indico"
ENV = {
    "INDICO_DB_PASSWORD": 'pa"ss\\word-1',
    "SMTP_TOKEN": "tok-0123456789",
    "INDICO_DB_URL": DB_URL,
    "INDICO_SITE": "events.example.org",
    "API_KEY": "ab",
}
PLANTED = ['pa"ss\\word-1', "tok-0123456789", "s3cr3t-pw"]


@pytest.fixture(autouse=True)
def fresh_logging(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(journal, "SOCKET", "/nonexistent/journal/socket")  # the host's journal is not the test's
    monkeypatch.setattr(logs, "_redactor", logs.Redactor())
    yield
    structlog.reset_defaults()


def capture(fmt="kv", level="info"):
    stream = io.StringIO()
    logs.configure(fmt=fmt, level=level, stream=stream)
    return stream


def lines(stream):
    return stream.getvalue().splitlines()


def test_kv_line_shape():
    stream = capture()
    logs.get_logger(role="worker").info(
        "container_restarted", container="indico-worker", exit_code=137, delay=0.0
    )
    (line,) = lines(stream)
    assert re.fullmatch(
        r"<6>ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z event=container_restarted "
        r"role=worker container=indico-worker exit_code=137 delay=0.0",
        line,
    )


def test_kv_quotes_only_when_needed():
    stream = capture()
    logs.get_logger().info("config_loaded", path="/etc/indico", note="two words", empty="", flag=True)
    (line,) = lines(stream)
    assert line.endswith('event=config_loaded path=/etc/indico note="two words" empty="" flag=true')


@pytest.mark.parametrize("method, prefix", [("error", "<3>"), ("warning", "<4>"), ("info", "<6>"), ("debug", "<7>")])
def test_kv_priority_prefix_per_level(method, prefix):
    stream = capture(level="debug")
    getattr(logs.get_logger(), method)("something_happened")
    (line,) = lines(stream)
    assert line.startswith(prefix + "ts=")
    assert "level=" not in line


def test_level_filtering():
    stream = capture(level="warning")
    log = logs.get_logger()
    log.debug("hidden_debug")
    log.info("hidden_info")
    log.warning("shown_warning")
    log.error("shown_error")
    assert [line.split("event=")[1] for line in lines(stream)] == ["shown_warning", "shown_error"]


def test_unknown_format_or_level_is_rejected():
    with pytest.raises(ValueError):
        logs.configure(fmt="xml", stream=io.StringIO())
    with pytest.raises(ValueError):
        logs.configure(level="verbose", stream=io.StringIO())


def test_reconfigure_reaches_logger_created_earlier():
    log = logs.get_logger(role="celery")
    first = capture()
    log.info("first_event")
    second = capture(fmt="json")
    log.info("second_event")
    assert len(lines(first)) == 1 and "second_event" not in first.getvalue()
    assert json.loads(second.getvalue())["event"] == "second_event"


def test_json_lines_parse_and_have_no_prefix_off_journal():
    stream = capture(fmt="json", level="debug")
    log = logs.get_logger(role="worker")
    log.warning("container_restarted", exit_code=137)
    log.debug("loop_turned")
    first, second = (json.loads(line) for line in lines(stream))
    assert list(first)[:2] == ["event", "level"]
    assert first["event"] == "container_restarted"
    assert first["level"] == "warning"
    assert first["role"] == "worker" and first["exit_code"] == 137
    assert "ts" in first
    assert second["level"] == "debug"


def test_journal_stream_adds_prefix_and_drops_timestamp(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        status = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        logs.configure(fmt="json", stream=stream)
        logs.get_logger().error("container_failed", role="worker")
        logs.configure(fmt="kv", stream=stream)
        logs.get_logger().info("container_started", role="worker")
    json_line, kv_line = path.read_text().splitlines()
    assert json_line.startswith("<3>{")
    assert json.loads(json_line[3:]) == {"event": "container_failed", "level": "error", "role": "worker"}
    assert kv_line == "<6>event=container_started role=worker"


def test_other_journal_stream_is_not_ours(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with open(tmp_path / "out", "w") as stream:
        assert not logs.stream_is_journal(stream)
    assert not logs.stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_newline_in_a_field_keeps_one_line(fmt):
    stream = capture(fmt=fmt)
    logs.get_logger().info("command_failed", output="line one\nline two\r\n\x1b[31m")
    (line,) = lines(stream)
    assert "line one\\nline two" in line


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_exception_is_rendered_on_the_same_event(fmt):
    stream = capture(fmt=fmt)
    try:
        raise RuntimeError("docker went away")
    except RuntimeError:
        logs.get_logger().exception("loop_crashed")
    (line,) = lines(stream)
    if fmt == "json":
        assert json.loads(line)["level"] == "error"
    else:
        assert line.startswith("<3>")
    assert "Traceback" in line and "RuntimeError: docker went away" in line


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_planted_secrets_never_reach_the_log(fmt):
    logs.add_secrets(logs.secrets_of_env(ENV))
    stream = capture(fmt=fmt)
    log = logs.get_logger(db=DB_URL)
    log.info("config_loaded", env=dict(ENV), password=ENV["INDICO_DB_PASSWORD"], args=[ENV["SMTP_TOKEN"]])
    log.warning(f"connect_failed {DB_URL}", detail=repr(ENV))
    try:
        raise ConnectionError(f"auth failed for {ENV!r} with {ENV['INDICO_DB_PASSWORD']}")
    except ConnectionError:
        log.exception("db_unreachable")
    output = stream.getvalue()
    assert len(lines(stream)) == 3
    for secret in PLANTED:
        escaped_twice = json.dumps(repr(secret)[1:-1])[1:-1]
        for form in logs._written_forms(secret) | {escaped_twice}:
            assert form not in output
    assert "postgresql://indico:***@db/indico" in output
    assert "events.example.org" in output
    if fmt == "json":
        for line in lines(stream):
            json.loads(line)


def test_uri_password_masked_without_registering_it():
    stream = capture()
    logs.get_logger().info("url_seen", url="redis://:hunter22@redis:6379/0", other="amqp://u:p@ss@mq/vhost")
    line = lines(stream)[0]
    assert "url=redis://:***@redis:6379/0" in line
    assert "other=amqp://u:***@mq/vhost" in line


def test_secrets_accumulate_across_reloads():
    stream = capture()
    logs.add_secrets({"first-secret"})
    logs.add_secrets({"second-secret"})
    logs.get_logger().info("reloaded", a="first-secret", b="second-secret")
    assert lines(stream)[0].endswith("event=reloaded a=*** b=***")


def test_short_values_are_not_masked():
    redactor = logs.Redactor()
    redactor.add_secrets(["ab", "abc", "", "abcd"])
    assert redactor.scrub("ab abc abcd abcde") == "ab abc *** ***e"


def test_secrets_of_env():
    assert logs.secrets_of_env(ENV | {"AWS_SECRET_ACCESS_KEY": "x", "MQ_URL": "amqp://u:p%40ss@mq"}) == {
        'pa"ss\\word-1', "tok-0123456789", "s3cr3t-pw", "ab", "x", "p%40ss", "p@ss",
    }


def test_mask_env():
    assert logs.mask_env(ENV | {"SECRET_KEY": ""}) == {
        "INDICO_DB_PASSWORD": "***",
        "SMTP_TOKEN": "***",
        "INDICO_DB_URL": "postgresql://indico:***@db/indico",
        "INDICO_SITE": "events.example.org",
        "API_KEY": "***",
        "SECRET_KEY": "",
    }


@pytest.mark.parametrize("uri, secret, shown", [
    # SQLAlchemy (Indico's SQLALCHEMY_DATABASE_URI) takes an unencoded "/" in the password.
    ("postgresql://indico:S3cr/etPw@indico-db/indico", "S3cr/etPw", "postgresql://indico:***@indico-db/indico"),
    # libpq takes the password as a query parameter too.
    ("postgresql:///indico?host=db&password=S3cretQry&sslmode=require", "S3cretQry",
     "postgresql:///indico?host=db&password=***&sslmode=require"),
    ("amqp://mq/vhost?auth_token=T0kenValue", "T0kenValue", "amqp://mq/vhost?auth_token=***"),
])
def test_uri_credentials_in_any_spelling_are_found_and_masked(uri, secret, shown):
    assert secret in logs.secrets_of_env({"DATABASE_URI": uri})
    assert logs.mask_env({"DATABASE_URI": uri}) == {"DATABASE_URI": shown}
    stream = capture("json")
    logs.get_logger().info("url_seen", url=uri)
    assert secret not in stream.getvalue() and json.loads(lines(stream)[0])["url"] == shown


def test_uris_without_credentials_are_left_alone():
    redactor = logs.Redactor()
    for text in ("https://indico.example.org/event/1?q=a&page=2", "http://host:8080/path", "mail me@example.org",
                 "redis://redis:6379/0"):
        assert redactor.scrub(text) == text
