"""Loading digest.toml and the environment: every mistake is one line naming file, line and key."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

import pytest

from digest.config import SUBJECT_NAMES, is_loopback, language_warning, load_config
from digest.errors import ConfigError

MINIMAL = """\
[newsletter]
name = "Left Voice Weekly"
timezone = "America/New_York"
language = "en"
from = "Left Voice Weekly <weekly@news.example.org>"
public_url = "https://news.example.org/digest/"
address = "PO Box 1234, New York, NY 10001"

[[sources]]
name = "Left Voice"
url = "feeds/leftvoice.xml"

[[sources]]
name = "Labor Notes"
url = "https://labornotes.example.org/feed"
section = "Labor"

[[sections]]
name = "Latin America"
categories = ["Latin America", " argentina ", "Mexico"]
max_articles = 5

[[sections]]
name = "Labor"
categories = ["Labor"]

[[sections]]
name = "More"
catch_all = true
"""


def write(folder: Path, text: str, name: str = "digest.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return str(caught.value)


def test_minimal_config_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    """Local source paths and the archive are resolved against the config file's folder."""
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config.newsletter.timezone.key == "America/New_York"
    assert config.newsletter.public_url == "https://news.example.org/digest"
    assert config.sources[0].url == str(tmp_path / "feeds" / "leftvoice.xml")
    assert config.sources[1].url == "https://labornotes.example.org/feed"
    assert config.archive_path == tmp_path / ".digest" / "archive.sqlite3"
    assert config.sections[0].categories == {"latin america", "argentina", "mexico"}
    assert config.sections[1].sources == {"Labor Notes"}
    assert config.sections[1].max_articles == 5
    assert config.sections[2].catch_all


def test_config_is_found_through_the_environment_variable(tmp_path: Path) -> None:
    """Without --config, $DIGEST_CONFIG names the file."""
    path = write(tmp_path, MINIMAL, "elsewhere.toml")
    assert load_config(environ={"DIGEST_CONFIG": str(path)}).path == path


def test_missing_config_says_how_to_create_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no file anywhere the error points at `digest init`."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no config file at digest\.toml.*digest init"):
        load_config(environ={})


def test_dotenv_beside_the_config_never_overrides_the_environment(tmp_path: Path) -> None:
    """.env fills in what the environment lacks; a variable already set wins."""
    write(tmp_path, "DIGEST_SECRET=from-file\nSMTP_HOST=smtp.example.org\n", ".env")
    config = load_config(write(tmp_path, MINIMAL), environ={"DIGEST_SECRET": "from-env"})
    assert config.env["DIGEST_SECRET"] == "from-env"
    assert config.env["SMTP_HOST"] == "smtp.example.org"


def test_env_file_option_chooses_another_file(tmp_path: Path) -> None:
    """--env-file replaces the .env beside the config, and a missing one is an error."""
    write(tmp_path, "SMTP_HOST=beside\n", ".env")
    other = write(tmp_path, "SMTP_HOST=chosen\n", "prod.env")
    config = load_config(write(tmp_path, MINIMAL), env_file=other, environ={})
    assert config.env["SMTP_HOST"] == "chosen"
    with pytest.raises(ConfigError, match="no env file"):
        load_config(tmp_path / "digest.toml", env_file=tmp_path / "nope.env", environ={})


def test_unknown_key_names_file_line_and_known_keys(tmp_path: Path) -> None:
    """A typo is reported at its line with the keys that would have been accepted."""
    text = MINIMAL.replace("max_articles = 5\n", "max_articles = 5\nmax_article = 3\n")
    message = load_error(write(tmp_path, text))
    assert message.startswith("digest.toml:22: sections[0].max_article: unknown key")
    assert "catch_all" in message and "max_articles" in message


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    """A string where a number belongs names the key, its line and the expected type."""
    text = MINIMAL.replace("max_articles = 5", 'max_articles = "five"')
    message = load_error(write(tmp_path, text))
    assert message.startswith("digest.toml:21: sections[0].max_articles: expected a whole number")
    assert "'five'" in message


def test_boolean_is_not_accepted_as_a_number(tmp_path: Path) -> None:
    """`max_articles = true` is a mistake even though Python counts bools as ints."""
    text = MINIMAL.replace("max_articles = 5", "max_articles = true")
    assert "expected a whole number" in load_error(write(tmp_path, text))


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    """Leaving out [newsletter].address names that key."""
    text = MINIMAL.replace('address = "PO Box 1234, New York, NY 10001"\n', "")
    assert "newsletter.address: missing, and it is required" in load_error(write(tmp_path, text))


def test_unknown_timezone_suggests_an_iana_name(tmp_path: Path) -> None:
    """A made-up time zone is refused with an example of a real one."""
    text = MINIMAL.replace("America/New_York", "Eastern")
    message = load_error(write(tmp_path, text))
    assert "digest.toml:3: newsletter.timezone: unknown time zone 'Eastern'" in message
    assert "America/New_York" in message


def test_pinned_section_must_exist(tmp_path: Path) -> None:
    """A source pinned to a section that is not configured is an error listing the sections."""
    text = MINIMAL.replace('section = "Labor"', 'section = "Labour"')
    message = load_error(write(tmp_path, text))
    assert "sources[1].section: no section is named 'Labour'" in message
    assert "Latin America" in message


def test_malformed_toml_is_one_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and says what tomllib saw."""
    message = load_error(write(tmp_path, MINIMAL + "\n[[sections]\n"))
    assert message.startswith("digest.toml:31: not valid TOML")
    assert "\n" not in message


def test_a_byte_order_mark_before_the_config_is_accepted(tmp_path: Path) -> None:
    """Notepad saves UTF-8 with a BOM; the config still loads."""
    path = tmp_path / "digest.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode("utf-8"))
    assert load_config(path, environ={}).newsletter.name == "Left Voice Weekly"


def test_a_table_declared_twice_is_named_with_both_lines(tmp_path: Path) -> None:
    """A second [newsletter] is our one line: where, which table, and to merge them."""
    message = load_error(write(tmp_path, MINIMAL + '\n[newsletter]\nname = "x"\n'))
    assert message == (
        "digest.toml:31: [newsletter] is declared twice (first on line 1) "
        "(hint: write each table once: merge the keys into one [newsletter])"
    )


def test_a_key_given_twice_is_named_with_its_line(tmp_path: Path) -> None:
    """A key written twice in one table names the key and its second line."""
    text = MINIMAL.replace('name = "Left Voice Weekly"', 'name = "a"\nname = "b"')
    assert load_error(write(tmp_path, text)).startswith("digest.toml:3: name is given twice")


def test_a_language_nobody_has_is_refused_with_the_shipped_ones(tmp_path: Path) -> None:
    """`language = "xx"` fails when the config loads, at its line, listing what digest ships."""
    message = load_error(write(tmp_path, MINIMAL.replace('language = "en"', 'language = "xx"')))
    assert message.startswith("digest.toml:4: newsletter.language: no language has the code 'xx'")
    assert "digest ships strings in en, es" in message


def test_a_language_without_a_catalog_loads_with_a_warning(tmp_path: Path) -> None:
    """Portuguese has dates but no catalog: it loads, and the warning says its words are English."""
    path = write(tmp_path, MINIMAL.replace('language = "en"', 'language = "pt"'))
    warning = language_warning(load_config(path, environ={}))
    assert warning is not None and "'pt'" in warning and "English" in warning
    assert language_warning(load_config(write(tmp_path, MINIMAL), environ={})) is None
    spanish = MINIMAL.replace('language = "en"', 'language = "es-MX"')
    assert language_warning(load_config(write(tmp_path, spanish), environ={})) is None


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("{{ newsletter.nmae }}", "unknown name 'newsletter.nmae'"),
        ("{{ isue.id }}", "unknown name 'isue'"),
        ("{{ issue.id | shout }}", "not a template that renders: No filter named 'shout'."),
        ("{{ issue.id", "not a template that renders: unexpected end of template"),
    ],
)
def test_a_subject_typo_is_caught_when_the_config_loads(
    tmp_path: Path, subject: str, expected: str
) -> None:
    """The subject renders against its names at load: a typo names file:line:key and the name."""
    text = f"[email]\nsubject = {subject!r}\n" + MINIMAL
    message = load_error(write(tmp_path, text))
    assert message.startswith(f"digest.toml:2: email.subject: {expected}")
    assert "\n" not in message


def test_a_subject_using_every_name_loads(tmp_path: Path) -> None:
    """Each name render gives the subject, and the i18n call, pass the check."""
    names = " ".join(f"{{{{ {g}.{n} }}}}" for g, ns in SUBJECT_NAMES.items() for n in ns)
    subject = names + ' {{ _("%(n)s!", n=issue.article_count + 1) }}'
    text = f"[email]\nsubject = {subject!r}\n" + MINIMAL
    assert load_config(write(tmp_path, text), environ={}).email.subject == subject


def test_a_subject_may_name_the_span_the_intro_uses(tmp_path: Path) -> None:
    """`issue.span` ("from this week"), which render gives the subject, passes the load check."""
    text = "[email]\nsubject = '{{ newsletter.name }}: news {{ issue.span }}'\n" + MINIMAL
    assert "issue.span" in load_config(write(tmp_path, text), environ={}).email.subject


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("https://news.example.org/digest/", "news.example.org"),
            "public_url: expected an http(s)",
        ),
        (('url = "feeds/leftvoice.xml"', 'url = "ftp://x.org/f"'), "sources[0].url: expected"),
        (('name = "More"', 'name = "Labor"'), "sections: two entries are named 'Labor'"),
        (('language = "en"', 'language = "English"'), "newsletter.language: expected a code"),
        (("weekly@news.example.org", "weekly"), "newsletter.from: expected an address"),
        (
            ('name = "Left Voice"\n', 'name = "Left Voice"\ntype = "atom"\n'),
            "auto, feed or wordpress",
        ),
        (
            ('[[sections]]\nname = "Labor"', '[[sections]]\ncatch_all = true\nname = "Labor"'),
            "more than one section has catch_all",
        ),
    ],
)
def test_invalid_values_are_refused(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    """Each bad value is caught when the config loads, not later in a run."""
    assert expected in load_error(write(tmp_path, MINIMAL.replace(*edit)))


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("Die, Workwear! <digest@example.org>", "Die, Workwear!"),
        ('"Die, Workwear!" <digest@example.org>', "Die, Workwear!"),
        ('Die "Workwear" (Berlin); Ltd. <digest@example.org>', 'Die "Workwear" (Berlin); Ltd.'),
        ("Zoë, Ünal & Co <digest@example.org>", "Zoë, Ünal & Co"),
        ("digest@example.org", ""),
    ],
)
def test_a_sender_name_with_specials_is_taken_as_written(
    tmp_path: Path, written: str, name: str
) -> None:
    """The address is what the angle brackets hold; the name before them, commas and quotes
    included, is the display name every reader of `from` finds."""
    edited = MINIMAL.replace(
        "Left Voice Weekly <weekly@news.example.org>", written.replace('"', '\\"')
    )
    sender = load_config(write(tmp_path, edited), environ={}).newsletter.sender
    assert parseaddr(sender) == (name, "digest@example.org")


@pytest.mark.parametrize(
    "written",
    [
        "Die, Workwear! digest@example.org",
        "Die <Workwear> <digest@example.org>",
        "Die Workwear <digest@example>",
        "Die Workwear <di gest@example.org>",
        "Die Workwear <digest@example.org",
        "Die\\nBcc: x@y.org <digest@example.org>",
    ],
)
def test_a_bad_sender_is_refused_when_the_config_loads(tmp_path: Path, written: str) -> None:
    """A `from` that is not one address (with a name before it) is a ConfigError naming the
    file's line and the key, before any build."""
    edited = MINIMAL.replace("Left Voice Weekly <weekly@news.example.org>", written)
    message = load_error(write(tmp_path, edited))
    assert message.startswith("digest.toml:5: newsletter.from: "), message
    assert "\n" not in message


def test_optional_tables_are_checked_too(tmp_path: Path) -> None:
    """[collect], [selection] and [archive] accept their keys and refuse others."""
    extra = (
        "[collect]\ntimeout = 5\nexcerpt_length = 120\n[selection]\ndays = 14\n"
        'featured_category = "Featured"\n[archive]\npath = "data/a.sqlite3"\n'
    )
    config = load_config(write(tmp_path, extra + MINIMAL), environ={})
    assert (config.collect.timeout, config.collect.excerpt_length) == (5.0, 120)
    assert (config.selection.days, config.selection.featured_category) == (14, "Featured")
    assert config.archive_path == tmp_path / "data" / "a.sqlite3"
    message = load_error(write(tmp_path, "[collect]\nretries = 3\n" + MINIMAL))
    assert message.startswith("digest.toml:2: collect.retries: unknown key")


def test_email_tracking_and_subscriber_tables(tmp_path: Path) -> None:
    """[email] paths must exist; [tracking] values are kept; [subscribers] file is resolved."""
    (tmp_path / "my-templates").mkdir()
    extra = (
        '[email]\ntemplates = "my-templates"\nsubject = "{{ newsletter.name }}"\n'
        '[tracking]\nutm_source = "newsletter"\nutm_campaign = "weekly-{issue_id}"\n'
        '[subscribers]\nfile = "lists/readers.csv"\n'
    )
    config = load_config(write(tmp_path, extra + MINIMAL), environ={})
    assert config.email.templates == tmp_path / "my-templates"
    assert config.email.subject == "{{ newsletter.name }}"
    assert (config.tracking.utm_source, config.tracking.utm_medium) == ("newsletter", None)
    assert config.subscribers_path == tmp_path / "lists" / "readers.csv"
    missing = write(tmp_path, '[email]\nnote = "note.txt"\n' + MINIMAL)
    assert load_error(missing).startswith("digest.toml:2: email.note: no file at")


def test_send_and_schedule_tables(tmp_path: Path) -> None:
    """[send] sets the sender's pace and retries, [schedule] when `digest run` sends."""
    extra = (
        "[send]\nconcurrency = 8\nprocesses = 3\nrate = 20\nper_day = 50000\n"
        "retry_delay = 0.5\nmark_bounced = false\n"
        '[schedule]\nevery = "week"\nday = "Friday"\ntime = "7:30"\nmin_articles = 3\n'
    )
    config = load_config(write(tmp_path, extra + MINIMAL), environ={})
    assert (config.send.concurrency, config.send.rate, config.send.per_day) == (8, 20.0, 50000)
    assert (config.send.per_hour, config.send.max_attempts, config.send.timeout) == (None, 5, 60.0)
    assert (config.send.retry_delay, config.send.mark_bounced) == (0.5, False)
    assert (config.send.processes, load_config(write(tmp_path, MINIMAL)).send.processes) == (
        3,
        None,
    )
    assert (config.schedule.every, config.schedule.day) == ("week", 4)
    assert (config.schedule.time.hour, config.schedule.time.minute) == (7, 30)
    assert config.schedule.min_articles == 3
    monthly = load_config(
        write(tmp_path, '[schedule]\nevery = "month"\nday = 15\n' + MINIMAL), environ={}
    )
    assert (monthly.schedule.every, monthly.schedule.day) == ("month", 15)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[send]\nconcurrency = 0\n", "digest.toml:2: send.concurrency: expected at least 1"),
        ('[send]\nrate = "fast"\n', "send.rate: expected a number, got a string"),
        ("[send]\nretries = 3\n", "send.retries: unknown key"),
        ("[send]\nprocesses = 0\n", "digest.toml:2: send.processes: expected at least 1"),
        ("[send]\nrate = inf\n", "digest.toml:2: send.rate: expected a positive number, got inf"),
        ("[send]\nrate = nan\n", "digest.toml:2: send.rate: expected a positive number, got nan"),
        ('[schedule]\nevery = "fortnight"\n', 'schedule.every: expected "day", "week" or'),
        ('[schedule]\nday = "someday"\n', "schedule.day: expected a weekday"),
        ('[schedule]\nevery = "month"\nday = 31\n', "schedule.day: expected a day from 1 to 28"),
        ('[schedule]\nevery = "day"\nday = "monday"\n', "a daily schedule has no day"),
        ('[schedule]\ntime = "8am"\n', 'schedule.time: expected a time such as "08:00"'),
        ('[newsletter]\narchive_url = "archive"\n', "newsletter.archive_url: expected an http"),
    ],
)
def test_bad_send_and_schedule_values_are_refused(
    tmp_path: Path, extra: str, expected: str
) -> None:
    """A mistake in [send] or [schedule] stops every command at load time, on one line."""
    is_newsletter_key = extra.startswith("[newsletter]")
    text = MINIMAL.replace("[newsletter]\n", extra) if is_newsletter_key else extra + MINIMAL
    assert expected in load_error(write(tmp_path, text))


def test_loopback_means_this_machine_only() -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; the wildcard and other addresses are not."""
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "", "::", "192.0.2.7", "example.org"]))
