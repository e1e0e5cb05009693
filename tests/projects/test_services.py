import pytest
from django.core.exceptions import ValidationError

from apps.projects import crypto, services
from apps.projects.models import Project, ProjectSecret
from tests.projects.factories import make_project


def test_create_project_encrypts_secrets_and_keeps_only_a_fingerprint(alice):
    project = make_project(
        alice, env={"TOKEN": "${secret:API_TOKEN}"}, secrets={"API_TOKEN": "s3cr3t-value"}
    )
    secret = ProjectSecret.objects.get(project=project)
    assert "s3cr3t-value" not in secret.ciphertext
    assert crypto.decrypt(secret.ciphertext) == "s3cr3t-value"
    assert secret.fingerprint == crypto.fingerprint("s3cr3t-value")
    assert services.project_secret_values(project_id=project.pk) == {"API_TOKEN": "s3cr3t-value"}


def test_env_may_only_reference_secrets_the_project_has(alice):
    with pytest.raises(ValidationError) as info:
        make_project(alice, env={"TOKEN": "${secret:MISSING}"})
    assert "MISSING" in str(info.value.message_dict["env"])


def test_limits_above_the_admin_maximum_are_refused_with_the_limit(alice, settings):
    settings.RUN_LIMITS = {**settings.RUN_LIMITS, "memory_mb": 1024}
    with pytest.raises(ValidationError) as info:
        make_project(alice, memory_mb=4096)
    assert "1024" in info.value.message_dict["memory_mb"][0]


def test_names_are_unique_per_owner_ignoring_case(alice, bob):
    make_project(alice, name="Shop")
    make_project(bob, name="shop")
    with pytest.raises(ValidationError):
        make_project(alice, name="SHOP")


def test_update_replaces_and_deletes_secrets(alice):
    project = make_project(alice, secrets={"A": "1", "B": "2"})
    services.update_project(
        project=project, values={"description": "x"}, set_secrets={"A": "9"}, delete_secrets=["B"]
    )
    assert services.project_secret_values(project_id=project.pk) == {"A": "9"}
    assert Project.objects.get(pk=project.pk).description == "x"


def test_deleting_a_secret_still_referenced_by_env_is_refused(alice):
    project = make_project(alice, env={"A": "${secret:A}"}, secrets={"A": "1"})
    with pytest.raises(ValidationError):
        services.update_project(project=project, values={}, delete_secrets=["A"])
    assert services.project_secret_values(project_id=project.pk) == {"A": "1"}


def test_archive_and_restore(alice):
    project = make_project(alice)
    services.archive_project(project=project)
    assert Project.objects.get(pk=project.pk).is_archived
    services.restore_project(project=project)
    assert not Project.objects.get(pk=project.pk).is_archived


def test_bad_image_reference_and_unknown_provider_are_refused(alice):
    with pytest.raises(ValidationError) as info:
        make_project(alice, image="Not An Image!", provider="nope")
    assert set(info.value.message_dict) >= {"image", "provider"}


def test_rotated_keys_still_decrypt_old_secrets(alice, settings):
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SECRETS_KEYS = [old]
    token = crypto.encrypt("v")
    settings.SECRETS_KEYS = [new, old]
    assert crypto.decrypt(token) == "v"
    assert crypto.decrypt(crypto.rotate(token)) == "v"
    settings.SECRETS_KEYS = [new]
    with pytest.raises(crypto.SecretDecryptionError):
        crypto.decrypt(token)
