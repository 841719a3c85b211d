"""[audit]'s keys: the senders' and the repository's typed settings cover every declared key between them, with
the declared defaults; a wrong destination is a one-line configuration error."""
import dataclasses

import pytest

from affinity_domain.audit.settings import AuditSenderSettings
from affinity_domain.config import DEFAULTS, ConfigError, build_settings, load
from audit_repository.settings import ArrSettings


def test_sender_and_repository_settings_cover_the_section():
    fields = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (AuditSenderSettings, ArrSettings)}
    assert not fields[AuditSenderSettings] & fields[ArrSettings]
    assert fields[AuditSenderSettings] | fields[ArrSettings] == set(DEFAULTS["audit"])
    for cls in (AuditSenderSettings, ArrSettings):
        s = build_settings(cls, load(environ={}))
        for key in fields[cls]:
            default = DEFAULTS["audit"][key]
            assert getattr(s, key) == (tuple(default) if isinstance(default, list) else default), key


@pytest.mark.parametrize("value, message", [
    ('["syslog://h:1"]', "is not tls://host:port"),
    ('["udp://h"]', "is not tls://host:port"),
    ('["udp://h:1", "udp://h:1"]', "named twice"),
])
def test_a_wrong_destination_is_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        build_settings(AuditSenderSettings, load(environ={"XDSI_AUDIT_DESTINATIONS": value}))
