"""The OpenAPI document is served and lists exactly the routes Flask serves."""

from orchestrator import __version__
from tests.support import Api
from web.api import openapi_path


def _flask_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), openapi_path(rule.rule)))
    return routes


def test_document_matches_the_routes(api: Api, live_server) -> None:  # type: ignore[no-untyped-def]
    document = api.ok("GET", "/api/openapi.json")
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == __version__
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    served = _flask_routes(live_server._server.app)
    assert documented == served


def test_every_operation_has_a_summary_and_security(api: Api) -> None:
    document = api.ok("GET", "/api/openapi.json")
    public = {("get", "/health"), ("get", "/api/openapi.json"), ("post", "/api/auth/login"), ("get", "/"),
              ("post", "/api/flows/{trigger_id}/trigger")}  # a flow's trigger checks its own token
    for path, item in document["paths"].items():
        for method, entry in item.items():
            assert entry["summary"], (method, path)
            assert (entry["security"] == []) == ((method, path) in public), (method, path)


def test_document_is_public(live_server) -> None:  # type: ignore[no-untyped-def]
    assert Api(live_server.url, None).get("/api/openapi.json").status_code == 200
