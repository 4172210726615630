"""The webhook target policy: a subscriber's URL cannot make our worker reach this machine, the
cloud's metadata service or the private network, however the address is written, through a
redirect, or by DNS answering differently at delivery than when the subscription was made. And a
receiver cannot make the worker read a huge answer, nor learn from the run's history which
hosts and ports answer."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.web.test_webhooks import SECRET, subscribe

PUBLIC = "93.184.215.14"  # a globally routable address; nothing connects to it in these tests


@pytest.fixture
def policy_on(settings):
    """Production's policy: only public addresses (tests/settings.py turns it off for the receivers)."""
    settings.PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS = False


class Server:
    """A receiver on 127.0.0.1 whose handler is given; it counts requests and body bytes sent."""

    def __init__(self, handle) -> None:
        self.requests: list[dict] = []
        self.bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append({"path": self.path, "host": self.headers.get("Host")})
                handle(self, server)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        # (shutdown() waits for the server's next poll: 0.05 s, not the default 0.5 s, per test)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    made: list[Server] = []

    def make(handle) -> Server:
        made.append(Server(handle))
        return made[-1]

    yield make
    for server in made:
        server.close()


def answer(status: int, headers: dict | None = None):
    def handle(request, server):
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", "0")
        request.end_headers()

    return handle


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> dict[str, int]:
    """Makes getaddrinfo answer `answers[host]` in turn (the last one repeats); counts the lookups."""
    real = socket.getaddrinfo
    calls: dict[str, int] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        calls[host] = calls.get(host, 0) + 1
        address = answers[host][min(calls[host], len(answers[host])) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


# --- when the subscription is made ------------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "is a link-local address"),
    ("http://[::1]:8741/hook", "is a loopback address"),
    ("http://0x7f000001:8741/hook", "(127.0.0.1) is a loopback address"),
    ("http://2130706433:8741/hook", "(127.0.0.1) is a loopback address"),
    ("http://0177.0.0.1:8741/hook", "(127.0.0.1) is a loopback address"),
    ("http://127.1:8741/hook", "(127.0.0.1) is a loopback address"),
    ("http://[::ffff:127.0.0.1]:8741/hook", "is a loopback address"),
    ("http://localhost:8741/hook", "(127.0.0.1) is a loopback address"),
    ("http://10.1.2.3/hook", "is a private address"),
    ("http://192.168.0.10:15672/api/users", "is a private address"),
    ("http://100.64.0.1/hook", "is a special-purpose address"),
    ("http://224.0.0.1/hook", "is a multicast address"),
    ("http://0.0.0.0:8000/hook", "is an unspecified address"),
    ("http://240.0.0.1/hook", "is a reserved address"),
    ("http://[fec0::1]/hook", "is a site-local address"),
    ("http://[2002:7f00:1::]/hook", "is a special-purpose address"),
])
def test_a_subscription_to_a_non_public_address_is_refused_however_it_is_written(
    client, api_token, policy_on, url, message
):
    from web.webhooks.models import WebhookSubscription

    response = subscribe(client, api_token, url=url)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "url"
    assert message in response.json()["error"] and "public addresses only" in response.json()["error"]
    assert not WebhookSubscription.objects.exists()


@pytest.mark.parametrize("url, message", [
    ("http://user:pass@127.0.0.1:8741/hook", "must not contain a user name or password"),
    ("https://user:pass@hooks.example.com/in", "must not contain a user name or password"),
    ("https://token@hooks.example.com/in", "must not contain a user name or password"),
    ("http://127.0.0.1:8299\\@localhost:8299/", "must not contain spaces, control characters or backslashes"),
])
def test_a_url_with_credentials_or_a_parser_confusing_backslash_is_refused_even_in_development(
    client, api_token, url, message
):
    response = subscribe(client, api_token, url=url)  # PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS is on here
    assert response.status_code == 400 and response.json()["field"] == "url"
    assert message in response.json()["error"]


def test_a_public_address_is_accepted_and_a_host_that_does_not_resolve_is_left_to_delivery(
    client, api_token, policy_on, monkeypatch
):
    fake_dns(monkeypatch, {"hooks.example.com": [PUBLIC]})
    assert subscribe(client, api_token, name="a", url=f"https://{PUBLIC}/in").status_code == 201
    assert subscribe(client, api_token, name="b", url="https://hooks.example.com/in").status_code == 201
    assert subscribe(client, api_token, name="c", url="https://no-such-host.invalid/in").status_code == 201


def test_the_development_setting_allows_private_targets(client, api_token, settings):
    settings.PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    assert subscribe(client, api_token, url="http://127.0.0.1:8741/hook").status_code == 201


# --- when a delivery connects -----------------------------------------------------------------


def test_a_host_that_resolves_to_loopback_at_delivery_is_refused_before_connecting(
    client, api_token, policy_on, monkeypatch, server_factory
):
    """DNS rebinding: public when subscribed, 127.0.0.1 when the worker connects."""
    from web.webhooks.models import WebhookSubscription
    from web.webhooks.pipelines import REFUSED, DeliveryFailed, post

    receiver = server_factory(answer(200))
    fake_dns(monkeypatch, {"rebind.test": [PUBLIC, "127.0.0.1"]})
    url = f"http://rebind.test:{receiver.port}/hook"
    assert subscribe(client, api_token, url=url).status_code == 201
    with pytest.raises(DeliveryFailed) as refused:
        post(WebhookSubscription.objects.get().url, SECRET, "{}", "run.succeeded", "d1")
    assert str(refused.value) == REFUSED
    assert "rebind.test (127.0.0.1) is a loopback address" in refused.value.detail
    assert receiver.requests == []


def test_a_delivery_connects_to_the_address_it_checked_and_keeps_the_host_name(
    policy_on, monkeypatch, server_factory
):
    """The address is resolved once, checked, and connected to: a second lookup (which could
    answer differently) never happens. The receiver still sees its own name in Host."""
    from web.webhooks import targets
    from web.webhooks.pipelines import post

    receiver = server_factory(answer(200))
    real_problem = targets.address_problem
    monkeypatch.setattr(targets, "address_problem",
                        lambda address: None if str(address) == "127.0.0.1" else real_problem(address))
    lookups = fake_dns(monkeypatch, {"pinned.test": ["127.0.0.1", "127.0.0.2"]})
    response = post(f"http://pinned.test:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d2")
    assert response.status_code == 200
    assert lookups == {"pinned.test": 1}
    assert receiver.requests == [{"path": "/hook", "host": f"pinned.test:{receiver.port}"}]


def test_an_https_delivery_to_a_pinned_address_still_verifies_the_certificate_of_the_host_name(
    policy_on, monkeypatch
):
    """Pinning the address must not weaken TLS: SNI and the certificate check use the URL's name
    (a certificate for that name is accepted, one for another name is refused)."""
    import ssl

    import trustme

    from web.webhooks import targets, transport

    authority = trustme.CA()
    seen: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen["host"] = self.headers["Host"]
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    def serve(name: str) -> ThreadingHTTPServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        authority.issue_cert(name).configure_cert(context)
        context.sni_callback = lambda sock, server_name, ctx: seen.__setitem__("sni", server_name)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return httpd

    real_problem = targets.address_problem
    monkeypatch.setattr(targets, "address_problem",
                        lambda address: None if str(address) == "127.0.0.1" else real_problem(address))
    fake_dns(monkeypatch, {"secure.test": ["127.0.0.1"]})
    with authority.cert_pem.tempfile() as ca_file:
        right, wrong = serve("secure.test"), serve("someone-else.test")
        try:
            with transport.session() as session:
                url = f"https://secure.test:{right.server_address[1]}/hook"
                assert session.post(url, data=b"{}", verify=ca_file, timeout=(3, 5)).status_code == 200
            assert seen == {"sni": "secure.test", "host": f"secure.test:{right.server_address[1]}"}
            with transport.session() as session, pytest.raises(requests.exceptions.SSLError):
                session.post(f"https://secure.test:{wrong.server_address[1]}/hook", data=b"{}", verify=ca_file,
                             timeout=(3, 5))
        finally:
            for httpd in (right, wrong):
                httpd.shutdown()
                httpd.server_close()


def test_a_redirect_is_judged_by_the_parser_the_client_uses(server_factory, monkeypatch):
    """`http://127.0.0.1:P\\@localhost:P/` is host localhost to urlsplit, but 127.0.0.1 to urllib3
    (and so to requests): a different origin from http://localhost:P, not followed."""
    from web.webhooks.pipelines import DeliveryFailed, post

    holder: dict = {}
    receiver = server_factory(lambda request, server: answer(
        302, {"Location": f"http://127.0.0.1:{holder['port']}\\@localhost:{holder['port']}/"})(request, server))
    holder["port"] = receiver.port
    fake_dns(monkeypatch, {"localhost": ["127.0.0.1"]})
    with pytest.raises(DeliveryFailed) as refused:
        post(f"http://localhost:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d3")
    assert refused.value.detail.startswith("redirect to another origin refused: http://127.0.0.1:")
    assert len(receiver.requests) == 1  # the redirect was not followed


def test_a_redirect_to_a_private_address_on_the_same_host_name_is_refused_at_connect(
    policy_on, server_factory, monkeypatch
):
    """Same origin by name, but the name now resolves to loopback: the next hop's connection is refused."""
    from web.webhooks import targets
    from web.webhooks.pipelines import REFUSED, DeliveryFailed, post

    receiver = server_factory(answer(307, {"Location": "/next", "Connection": "close"}))
    real_problem = targets.address_problem
    calls = {"n": 0}

    def first_time_public(address):
        calls["n"] += 1
        return None if calls["n"] == 1 else real_problem(address)

    monkeypatch.setattr(targets, "address_problem", first_time_public)
    fake_dns(monkeypatch, {"hop.test": ["127.0.0.1"]})
    with pytest.raises(DeliveryFailed) as refused:
        post(f"http://hop.test:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d4")
    assert str(refused.value) == REFUSED
    assert [r["path"] for r in receiver.requests] == ["/hook"]


def test_a_url_with_credentials_stored_before_the_policy_is_not_delivered(server_factory):
    from web.webhooks.pipelines import REFUSED, DeliveryFailed, post

    receiver = server_factory(answer(200))
    with pytest.raises(DeliveryFailed) as refused:
        post(f"http://user:pass@127.0.0.1:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d5")
    assert str(refused.value) == REFUSED and receiver.requests == []


# --- what a receiver can make the worker do ---------------------------------------------------


def endless_body(total: int = 400 * 1024 * 1024):
    """An answer of `total` bytes (400 MB), chunked, sent until the client stops reading."""
    def handle(request, server):
        request.send_response(200)
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(total // len(chunk)):
                request.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                server.bytes_sent += len(chunk)
            request.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up: what we want
        request.close_connection = True

    return handle


def test_a_huge_answer_is_not_read_whole_and_fails_the_delivery(server_factory):
    from web.webhooks.pipelines import FAILED, MAX_RESPONSE_BYTES, DeliveryFailed, post

    receiver = server_factory(endless_body())
    with pytest.raises(DeliveryFailed) as failed:
        post(f"http://127.0.0.1:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d6")
    assert str(failed.value) == FAILED
    assert failed.value.detail == f"the answer's body is over the limit of {MAX_RESPONSE_BYTES} bytes"
    receiver.close()  # waits for the handler: bytes_sent is final
    # The worker stopped reading after 64 KiB; what the server got out is what fits in the sockets' buffers.
    assert receiver.bytes_sent < 32 * 1024 * 1024, receiver.bytes_sent


def test_an_answer_that_declares_a_huge_length_fails_without_being_read(server_factory):
    from web.webhooks.pipelines import DeliveryFailed, post

    def handle(request, server):
        request.send_response(200)
        request.send_header("Content-Length", str(400 * 1024 * 1024))
        request.end_headers()
        try:
            request.wfile.write(b"x" * 65536)
        except OSError:
            pass
        request.close_connection = True

    receiver = server_factory(handle)
    with pytest.raises(DeliveryFailed) as failed:
        post(f"http://127.0.0.1:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d7")
    assert failed.value.detail == "the answer declares 419430400 bytes, over the limit of 65536 bytes"


def test_an_answer_cut_short_fails_the_delivery_instead_of_crashing_the_stage(server_factory):
    from web.webhooks.pipelines import FAILED, DeliveryFailed, post

    def handle(request, server):
        request.send_response(200)
        request.send_header("Content-Length", "1000")
        request.end_headers()
        request.wfile.write(b"only ten b")
        request.close_connection = True

    receiver = server_factory(handle)
    with pytest.raises(DeliveryFailed) as failed:
        post(f"http://127.0.0.1:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d10")
    assert str(failed.value) == FAILED and failed.value.detail.startswith("reading the answer failed: ")


def test_a_small_answer_body_is_read_and_the_delivery_succeeds(server_factory):
    from web.webhooks.pipelines import post

    def handle(request, server):
        body = b'{"ok": true}'
        request.send_response(202)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    receiver = server_factory(handle)
    assert post(f"http://127.0.0.1:{receiver.port}/hook", SECRET, "{}", "run.succeeded", "d8").status_code == 202


@pytest.mark.parametrize("handle", [answer(404), answer(500), None], ids=["answers 404", "answers 500", "closed port"])
def test_failures_read_the_same_in_the_run_whatever_the_receiver_did(server_factory, handle):
    """No status, no connection error in what the API shows: a closed port, a 404 and a 500 all
    record "delivery failed" (the details go to the worker's log line only)."""
    from web.webhooks.pipelines import FAILED, DeliveryFailed, post

    if handle is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    else:
        port = server_factory(handle).port
    with pytest.raises(DeliveryFailed) as failed:
        post(f"http://127.0.0.1:{port}/hook", SECRET, "{}", "run.succeeded", "d9")
    assert str(failed.value) == FAILED
    assert failed.value.detail  # what happened, for the log line...
    assert "/hook" not in failed.value.detail  # ...without the URL's path, often a secret


# --- what is shown ----------------------------------------------------------------------------


def test_a_stored_url_with_credentials_is_listed_without_them(client, api_token):
    from web.webhooks.models import WebhookSubscription

    WebhookSubscription.objects.create(name="legacy", url="https://bob:hunter2@hooks.example.com/in", secret=SECRET)
    listed = client.get("/api/webhooks", HTTP_AUTHORIZATION=f"Bearer {api_token}").json()["webhooks"]
    assert listed[0]["url"] == "https://***@hooks.example.com/in"
    assert "hunter2" not in json.dumps(listed)


def test_the_admin_change_form_never_contains_the_secret_and_keeps_it_when_left_blank(admin_client):
    from web.webhooks.models import WebhookSubscription

    sub = WebhookSubscription.objects.create(name="ops", url="https://hooks.example.com/in", secret=SECRET)
    page = admin_client.get(f"/admin/webhooks/webhooksubscription/{sub.pk}/change/")
    assert page.status_code == 200 and SECRET.encode() not in page.content
    form = {"name": "ops", "url": "https://hooks.example.com/in", "secret": "", "event_types": '["run.failed"]',
            "pipelines": "[]", "active": "on", "max_consecutive_failures": "5", "max_attempts": "6",
            "consecutive_failures": "0", "disabled_reason": ""}
    saved = admin_client.post(f"/admin/webhooks/webhooksubscription/{sub.pk}/change/", form)
    assert saved.status_code == 302, saved.content[:2000]
    sub.refresh_from_db()
    assert sub.secret == SECRET and sub.event_types == ["run.failed"]
    admin_client.post(f"/admin/webhooks/webhooksubscription/{sub.pk}/change/", {**form, "secret": "a-new-secret-of-24-chars"})
    sub.refresh_from_db()
    assert sub.secret == "a-new-secret-of-24-chars"
