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


def test_anonymous_browsers_keep_their_id_across_reloads(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    browser = "garage_anon=0f8e2a9c-1d2b-4c3d-8e9f-a0b1c2d3e4f5; other=1"
    assert user_of(request(browser, "first")) == user_of(request(browser, "reloaded"))
    assert user_of(request(browser)) != user_of(request("garage_anon=11111111-2222-3333-4444-555555555555"))
    assert user_of(request("garage_anon=../../etc", "s1")) == "anon-s1"  # a forged value is ignored


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
