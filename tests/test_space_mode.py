"""The real app started as on a Space: with the variables a Space with ``hf_oauth: true`` sets (sign-in served,
the Hub's OpenID provider stood in for on 127.0.0.1), and with SPACE_ID alone (a Docker Space without OAuth, a
rehearsal of Space mode). Both must start and keep visitors apart."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.app_server import AppServer
from tests.helpers import conversations, write_jsonl


class OpenIdProvider:
    """What Gradio's sign-in reads of the Hub before it sends a visitor there: its OpenID configuration."""

    def __enter__(self) -> "OpenIdProvider":
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/.well-known/openid-configuration":
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps({"issuer": provider.url, "authorization_endpoint": f"{provider.url}/oauth/authorize",
                                   "token_endpoint": f"{provider.url}/oauth/token",
                                   "userinfo_endpoint": f"{provider.url}/oauth/userinfo",
                                   "jwks_uri": f"{provider.url}/oauth/jwks"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def location_of(url: str) -> str:
    """Where ``url`` redirects to (not followed)."""
    try:
        urllib.request.build_opener(NoRedirect).open(url, timeout=10)
    except urllib.error.HTTPError as redirect:
        assert redirect.code in (302, 303, 307), redirect.code
        return redirect.headers["Location"]
    raise AssertionError(f"{url} did not redirect")


def saved_names(client, path, name: str) -> str:
    """Save ``path`` as dataset ``name`` through the API, as the visitor ``client`` is; the datasets it then lists."""
    from gradio_client import handle_file

    _, names = client.predict(handle_file(str(path)), "", "", "train", "", "", "", name, False,
                              api_name="/save_dataset")
    return json.dumps(names)


@pytest.mark.slow
def test_a_space_with_sign_in_starts_sends_visitors_to_the_hub_and_keeps_them_apart(tmp_path):
    from gradio_client import Client

    data = write_jsonl(tmp_path / "qa.jsonl", conversations())
    with OpenIdProvider() as hub:
        app = AppServer(tmp_path / "home", SPACE_ID="me/garage", SYSTEM="spaces", SPACE_HOST="me-garage.hf.space",
                        OAUTH_CLIENT_ID="garage-client", OAUTH_CLIENT_SECRET="not-a-real-secret",
                        OAUTH_SCOPES="openid profile", OPENID_PROVIDER_URL=hub.url).start()
        try:
            target = location_of(f"{app.url}/login/huggingface")
            assert target.startswith(f"{hub.url}/oauth/authorize") and "client_id=garage-client" in target
            first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
            assert "alices-notes" in saved_names(first, data, "alices-notes")
            assert "alices-notes" not in saved_names(second, data, "bobs-notes")  # another visitor's workspace
            # one visitor across calls: the server's signed cookie, kept by the client from its first answer
            mine = first.cookies["garage_visitor"]
            assert "alices-notes" in saved_names(first, data, "more-notes")
            # a cookie made up, or another's id under this one's signature: a new visitor, who sees nothing
            visitor, signature = mine.split(".")
            for forged in (visitor, f"{'0' * len(visitor)}.{signature}", f"{visitor}.{'f' * len(signature)}"):
                stranger = Client(app.url, verbose=False, httpx_kwargs={"cookies": {"garage_visitor": forged}})
                assert "alices-notes" not in saved_names(stranger, data, "strangers-notes")
            # nor by a cookie header the server cannot read, the visitor's id as the queue's session or as the
            # header the app reads (found by an attack on a Space-mode app: the session hash was trusted)
            stranger = Client(app.url, verbose=False, headers={"Cookie": "x=a b; garage_visitor=junk",
                                                                "X-Garage-Visitor": visitor})
            stranger.session_hash = visitor
            assert "alices-notes" not in saved_names(stranger, data, "strangers-notes")
            # a valid cookie beside another site's cookie with a space in it is still the visitor's
            again = Client(app.url, verbose=False, headers={"Cookie": f"pref=dark mode; garage_visitor={mine}"})
            assert "alices-notes" in saved_names(again, data, "again-notes")
            # the cookie is the server's to set: HttpOnly (no page script reads it), Secure and SameSite=None
            # behind HTTPS (a Space is framed by the Hub's page)
            answer = urllib.request.urlopen(urllib.request.Request(
                f"{app.url}/config", headers={"X-Forwarded-Proto": "https"}), timeout=10)
            set_cookie = answer.headers["Set-Cookie"]
            assert set_cookie.startswith("garage_visitor=") and "HttpOnly" in set_cookie
            assert "Secure" in set_cookie and "SameSite=None" in set_cookie
        finally:
            app.stop()
    log = app.log_path.read_text()
    assert "not-a-real-secret" not in log and mine not in log
    key = (tmp_path / "home" / "secrets" / "cookie.key")
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_text() not in log  # kept, for restarts, and private


@pytest.mark.slow
def test_space_mode_without_sign_in_starts_too(tmp_path):
    app = AppServer(tmp_path / "home", SPACE_ID="me/garage").start()  # no OAuth variables, no Hub login here
    try:
        page = urllib.request.urlopen(app.url, timeout=10).read().decode()
        assert "Gemma Garage" in page and "Sign-in with Hugging Face is not set up here" in page
    finally:
        app.stop()
