"""Security settings: secrets stay out of logs, and every Kafka client the service creates
gets the SASL/TLS options (a client added without them would talk plaintext to the cluster)."""
import ast
from pathlib import Path

from recommender.settings import Settings
from streams import topics

REPO = Path(__file__).resolve().parents[1]
KAFKA_CLIENTS = {"KafkaConsumer", "KafkaProducer", "KafkaAdminClient", "AIOKafkaConsumer", "AIOKafkaProducer"}


def test_secrets_never_appear_in_the_settings_repr():
    settings = Settings(kafka_sasl_password="sasl-secret", qdrant_api_key="qdrant-secret",
                        admin_token="admin-secret")
    for secret in ("sasl-secret", "qdrant-secret", "admin-secret"):
        assert secret not in repr(settings)


def test_sasl_over_tls_options_carry_the_credentials_and_a_tls_context():
    options = topics.security_options(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                                               kafka_sasl_username="svc", kafka_sasl_password="pw"))
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == \
        ("SCRAM-SHA-512", "svc", "pw")
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert topics.security_options(Settings()) == {"security_protocol": "PLAINTEXT"}


def kafka_clients_without_security(path: Path) -> list[str]:
    """Calls that create a Kafka client without ``**security_options(...)``, as file:line."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in KAFKA_CLIENTS:
            spread = [keyword.value for keyword in node.keywords if keyword.arg is None]
            if not any("security_options" in ast.unparse(value) for value in spread):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return missing


def test_every_kafka_client_of_the_service_gets_the_security_options():
    sources = sorted((REPO / "streams").glob("*.py"))
    assert any("AIOKafkaConsumer(" in source.read_text() for source in sources)  # the check sees real clients
    assert [line for source in sources for line in kafka_clients_without_security(source)] == []
