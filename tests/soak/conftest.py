"""The soak reuses the gateway tests' process fixture."""

from tests.integration.gateway.conftest import gateway_factory  # noqa: F401
