"""Gateway settings: where state lives, and when requests must be signed."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamhost.gateway.settings import SettingsError, build_settings, is_loopback
from streamhost.gateway.validation import validate_input


def test_a_state_path_is_a_sqlite_file_whose_folder_holds_logs(tmp_path):
    settings = build_settings(state=str(tmp_path / "gw.db"), environ={})
    assert settings.state_url == f"sqlite:///{tmp_path / 'gw.db'}"
    assert settings.state_dir == tmp_path


def test_a_database_url_keeps_logs_in_the_default_state_folder(tmp_path):
    settings = build_settings(
        state="postgresql://u@db/streamhost", environ={"XDG_STATE_HOME": str(tmp_path)}
    )
    assert settings.state_url == "postgresql://u@db/streamhost"
    assert settings.state_dir == tmp_path / "streamhost"


def test_credentials_from_the_environment_turn_auth_on():
    settings = build_settings(
        environ={"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"}, state="sqlite://"
    )
    assert settings.auth_enabled and "AKID" in settings.credentials


def test_no_auth_turns_it_off_even_with_credentials_on_loopback():
    settings = build_settings(
        no_auth=True,
        environ={"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"},
        state="sqlite://",
    )
    assert not settings.auth_enabled


def test_a_network_address_needs_credentials_or_insecure(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SettingsError, match=r"refusing to serve 0\.0\.0\.0 without credentials"):
        build_settings(host="0.0.0.0", environ={}, state="sqlite://")
    assert not build_settings(
        host="0.0.0.0", insecure=True, environ={}, state="sqlite://"
    ).auth_enabled
    secured = build_settings(
        host="0.0.0.0",
        environ={"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"},
        state="sqlite://",
    )
    assert secured.auth_enabled


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"provisioner": "k8s"}, "--provisioner must be local or ray, got 'k8s'"),
        ({"ray_address": "auto"}, "--ray-address goes with --provisioner ray"),
        ({"ray_ship_models": True}, "--ray-ship-models goes with --provisioner ray"),
        ({"provisioner": "ray", "ray_resource_scale": 0.0}, "must be in (0, 1], got 0"),
        ({"provisioner": "ray", "ray_placement_timeout": -1.0}, "must be positive, got -1"),
    ],
)
def test_ray_options_are_checked(options, message):
    with pytest.raises(SettingsError) as raised:
        build_settings(environ={}, state="sqlite://", **options)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.2", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("location", ["file:///srv/models/m.tar.gz", "/srv/models/m.tar.gz"])
def test_create_model_accepts_model_data_on_the_gateways_own_disk(location):
    request = validate_input(
        "CreateModel",
        {"ModelName": "m", "PrimaryContainer": {"Image": "streamhost", "ModelDataUrl": location}},
    )
    assert request["PrimaryContainer"]["ModelDataUrl"] == location
    assert Path(location.removeprefix("file://")).name == "m.tar.gz"
