"""The integration tests' gateway factory and SCU settings, for the operations tests too."""

from tests.integration.conftest import make_gateway, send_files_as_they_are

__all__ = ["make_gateway", "send_files_as_they_are"]
