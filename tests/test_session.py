"""Whose workspace a request belongs to."""

from types import SimpleNamespace

import pytest

from garage.ui.session import user_of


def request(cookie="", session="abc123"):
    return SimpleNamespace(headers={"cookie": cookie}, session_hash=session)


def test_off_a_space_everything_is_the_local_users(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert user_of(request()) == "local"


def test_signed_in_users_are_named(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "me/garage")
    assert user_of(request(), SimpleNamespace(username="ada")) == "hf-ada"


def test_anonymous_visitors_are_who_the_servers_middleware_says_and_nobody_else(monkeypatch):
    import asyncio

    from garage.ui import identity

    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)

    def through_middleware(*cookies: str, header: str = "") -> tuple[str, list]:
        """The user a request is, after the app's middleware saw it with these Cookie headers; what it set."""
        seen, sent = {}, []

        async def app(scope, receive, send):
            seen["headers"] = dict((k.decode(), v.decode()) for k, v in scope["headers"])
            await send({"type": "http.response.start", "status": 200, "headers": []})

        async def send(message):
            sent.extend(message.get("headers", []))

        headers = [(b"cookie", c.encode()) for c in cookies] + ([(b"x-garage-visitor", header.encode())] if header
                                                                  else [])
        asyncio.run(identity.VisitorCookie(app)({"type": "http", "headers": headers}, None, send))
        return user_of(request_with(seen["headers"], "chosen-by-the-client")), sent

    def request_with(headers, session):
        return SimpleNamespace(headers=headers, session_hash=session)

    mine = identity.sign("0f8e2a9c1d2b4c3d")
    assert through_middleware(f"{identity.COOKIE}={mine}; other=1") == ("anon-0f8e2a9c1d2b4c3d", [])
    # another site's cookie with a space, a second Cookie header, quotes: the valid cookie still counts
    assert through_middleware(f"pref=dark mode; {identity.COOKIE}={mine}")[0] == "anon-0f8e2a9c1d2b4c3d"
    assert through_middleware("x=1", f'{identity.COOKIE}="{mine}"')[0] == "anon-0f8e2a9c1d2b4c3d"
    edited = mine.replace("0f8e2a9c1d2b4c3d", "0f8e2a9c1d2b4c3e")  # another's id under this one's signature
    for forged in (f"{identity.COOKIE}=0f8e2a9c1d2b4c3d", edited, f"{identity.COOKIE}=../../etc.abc",
                   "garage_anon=0f8e2a9c-1d2b-4c3d-8e9f-a0b1c2d3e4f5", "x=a b; garage_visitor=junk", ""):
        user, sent = through_middleware(forged, header="0f8e2a9c1d2b4c3d")  # nor the header, nor the session
        assert user.startswith("anon-") and user not in ("anon-0f8e2a9c1d2b4c3d", "anon-chosen-by-the-client")
        assert sent and sent[0][1].startswith(f"{identity.COOKIE}=".encode()) and b"HttpOnly" in sent[0][1]
        assert identity.verified(sent[0][1].split(b";")[0].split(b"=", 1)[1].decode()) == user[len("anon-"):]


def test_a_bug_is_logged_with_its_trace_but_without_keys_or_tokens(monkeypatch, caplog):
    import gradio as gr

    from garage.ui.session import user_errors

    monkeypatch.setenv("GEMINI_API_KEY", "server-gemini-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_server_token_secret")
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")  # a local server's placeholder: not a secret to mask

    @user_errors
    def on_click(dataset, api_key="", oauth_token=None):
        raise RuntimeError(f"boom with {api_key} and server-gemini-secret and hf_server_token_secret and "
                           f"{oauth_token.token} and EMPTY")

    with pytest.raises(gr.Error) as raised:
        on_click("data", api_key="pasted-visitor-secret", oauth_token=gr.OAuthToken(token="signed-in-user-token", scope="", expires_at=0))
    logged = caplog.text
    assert "RuntimeError: boom with *** and *** and hf_*** and *** and EMPTY" in logged  # the trace is there
    assert "on_click" in logged
    for secret in ("pasted-visitor-secret", "server-gemini-secret", "hf_server_token_secret", "signed-in-user-token"):
        assert secret not in logged and secret not in raised.value.message
