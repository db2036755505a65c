"""Settings validation and the credential store: errors name the file and the key, never a secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.config import ConfigError, load_settings
from daemon.credentials import CredentialError, CredentialStore
from tests.lab.common import REPO

SECRET = "s3cr3t-value-that-must-not-leak"


def test_unknown_key_names_the_file_and_the_dotted_key(tmp_path):
    path = tmp_path / "baie.toml"
    path.write_text('[api]\nsocket = "/run/baie/api.sock"\nsockit = "typo"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)
    assert "'api.sockit'" in str(caught.value)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "baie.toml"
    path.write_text("[api\nsocket = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)


def test_environment_overrides_the_database_url(tmp_path):
    path = tmp_path / "baie.toml"
    path.write_text('[database]\nurl = "sqlite:////var/lib/baie/baie.db"\n')
    assert load_settings(path, env={}).database.url == "sqlite:////var/lib/baie/baie.db"
    settings = load_settings(path, env={"BAIE_DATABASE_URL": "postgresql://baie@db/baie"})
    assert settings.database.url == "postgresql://baie@db/baie"


def test_daemon_refuses_bad_settings_with_one_line_and_exit_2(tmp_path):
    path = tmp_path / "baie.toml"
    path.write_text("[log]\nlevel = 'chatty'\n")
    result = subprocess.run([sys.executable, "-m", "daemon", "--config", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(path) in result.stderr and "log.level" in result.stderr


def _secret_file(directory, name, content, mode):
    path = directory / name
    path.write_text(content)
    path.chmod(mode)
    return path


def test_credentials_readable_by_others_are_refused(tmp_path):
    path = _secret_file(tmp_path, "bmc", f"admin:{SECRET}\n", 0o644)
    with pytest.raises(CredentialError) as caught:
        CredentialStore(tmp_path).credentials("bmc")
    assert str(path) in str(caught.value) and "0644" in str(caught.value)
    assert SECRET not in str(caught.value)
    # systemd's $CREDENTIALS_DIRECTORY is private to the service whatever the file modes
    assert CredentialStore(tmp_path, systemd=True).credentials("bmc").password.reveal() == SECRET


def test_credentials_are_read_and_never_shown(tmp_path):
    _secret_file(tmp_path, "bmc", f"admin:{SECRET}:with-colon\n", 0o600)
    _secret_file(tmp_path, "api-token", f"{SECRET}\n", 0o600)
    store = CredentialStore(tmp_path)
    creds = store.credentials("bmc")
    token = store.get("api-token")
    assert creds.username == "admin"
    assert creds.password.reveal() == f"{SECRET}:with-colon"
    assert token.reveal() == SECRET
    for shown in (repr(creds), str(creds), repr(token), str(token), f"{token}", repr([creds, token])):
        assert SECRET not in shown


def test_credential_errors_never_carry_the_content(tmp_path):
    _secret_file(tmp_path, "bmc", f"{SECRET}\n", 0o600)  # no username
    store = CredentialStore(tmp_path)
    with pytest.raises(CredentialError, match="username:password") as caught:
        store.credentials("bmc")
    assert SECRET not in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(CredentialError, match="no such credential file"):
        store.get("absent")
    with pytest.raises(CredentialError, match="not a credential name"):
        store.get("../bmc")
