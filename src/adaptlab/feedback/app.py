"""The feedback web app: server-rendered pages, a little inline JavaScript, JSON endpoints for writes.

In a ranking project the annotator orders an item's candidates; in a thumbs project they give each candidate a
thumbs up or down. Both pages post to the same ``/api/submit`` (action ``rank`` or ``judge``) and share the
undo, lease, CSRF and submission-id machinery.

Prompts and candidates are model output, i.e. untrusted: every one goes through ``html.escape`` and is shown
as text, and a nonce-based Content-Security-Policy blocks any script that slipped through anyway. The
session cookie is HttpOnly and SameSite=Strict; writes also need the session's CSRF token in a header or
form field. Endpoints are plain (sync) functions, so each runs in the server's thread pool with its own
SQLite connection: concurrent submissions are serialised by SQLite's write lock, not by the event loop.
Showing an item reserves it for the annotator (``db.next_prompt``), so annotators working at once get
different items instead of racing for the same one.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from html import escape
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from adaptlab.errors import AdaptlabError
from adaptlab.feedback import db
from adaptlab.feedback.assets import SCRIPT, STYLE
from adaptlab.feedback.project import MODE_FORMATS, agreement, check_format, export_rows, thumbs_agreement

COOKIE = "adaptlab_session"
ACTIONS = {"rank": "ranked", "judge": "judged", "skip": "skipped", "flag": "flagged"}
MAX_BODY_BYTES = 64 * 1024  # a submission is a few hundred bytes; anything near this is not one
MAX_REASON_CHARS = 500  # the flag reason box holds as much (maxlength)

def _html(title: str, body: str, request: Request, status: int = 200, csrf: str = "") -> HTMLResponse:
    nonce = request.state.nonce
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="csrf-token" content="{escape(csrf)}">'
        f'<title>{escape(title)} · adaptlab feedback</title><style nonce="{nonce}">{STYLE}</style></head>'
        f'<body>{body}</body></html>', status_code=status)


def _script(request: Request) -> str:
    return f'<script nonce="{request.state.nonce}">{SCRIPT}</script>'


def _header(user: db.Annotator, csrf: str, title: str = "Rank the responses") -> str:
    admin = ' · <a href="/admin">Admin</a>' if user.is_admin else ""
    return (f'<header><h1>{title}</h1><div>Signed in as <strong>{escape(user.name)}</strong>{admin}'
            f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<button type="submit">Sign out</button></form></div></header>')


def _candidate(index: int, cid: int, text: str, total: int) -> str:
    return (f'<li draggable="true" tabindex="0" data-id="{cid}" aria-describedby="help" aria-label="Rank {index} of {total}">'
            f'<span class="rank" aria-hidden="true">{index}</span><div class="text">{escape(text)}</div>'
            f'<div class="controls"><button type="button" class="up" aria-label="Move up">↑ Up</button>'
            f'<button type="button" class="down" aria-label="Move down">↓ Down</button>'
            f'<label><input type="checkbox" class="tie"> Tie with the one above</label></div></li>')


def _thumbs_candidate(index: int, cid: int, text: str, total: int) -> str:
    return (f'<li tabindex="0" data-id="{cid}" aria-describedby="help" aria-label="Response {index} of {total}">'
            f'<span class="rank" aria-hidden="true">{index}</span><div class="text">{escape(text)}</div>'
            f'<div class="controls" role="group" aria-label="Judge response {index}">'
            f'<button type="button" class="thumb-up" aria-pressed="false" aria-label="Thumbs up">👍 Good</button>'
            f'<button type="button" class="thumb-down" aria-pressed="false" aria-label="Thumbs down">👎 Bad</button></div></li>')


TITLES = {"rank": "Rank the responses", "thumbs": "Judge the responses"}


def create_app(directory: Path, lease_seconds: float = db.LEASE_SECONDS) -> FastAPI:
    """The app for one project directory (which must already hold a project); an item shown to an annotator stays
    reserved for them for ``lease_seconds``."""
    db.check_lease_seconds(lease_seconds)
    db.connect(directory).close()  # fails early, with a clear message, if it is not a project (and upgrades it)
    local = threading.local()

    def conn() -> sqlite3.Connection:
        if not hasattr(local, "conn"):
            local.conn = db.connect(directory)
        return local.conn

    app = FastAPI(title="adaptlab feedback", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        request.state.nonce = secrets.token_urlsafe(16)
        response = await call_next(request)
        nonce = request.state.nonce
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)
        hint = ' Open the login link you were given.' if status == 401 else ""
        return _html("Error", f'<main><h1>{status}</h1><p role="alert">{escape(message)}.{hint}</p></main>', request, status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error(request, 422, "invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        return error(request, 500, "internal error")

    def auth(request: Request, admin: bool = False, csrf: str | None = None) -> tuple[db.Annotator, str]:
        """The signed-in annotator and CSRF token; 401 without a live session, 403 for a bad CSRF token or a
        non-admin on an admin route. ``csrf`` is the token the request carries (checked when not None)."""
        found = db.session(conn(), request.cookies.get(COOKIE, ""))
        if found is None:
            raise HTTPException(401, "not signed in, or the session expired")
        user, token = found
        if csrf is not None and not secrets.compare_digest(csrf.encode(), token.encode()):
            raise HTTPException(403, "missing or wrong CSRF token")
        if admin and not user.is_admin:
            raise HTTPException(403, "admins only")
        return user, token

    @app.get("/login")
    def login(request: Request, token: str = "") -> Response:
        started = db.login(conn(), token) if token else None
        if started is None:
            raise HTTPException(401, "unknown login token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, started[0], max_age=db.SESSION_SECONDS, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @app.get("/", response_class=HTMLResponse)
    def ranking_page(request: Request, prompt: Annotated[int | None, Query(ge=1, le=db.MAX_ID)] = None) -> Response:
        """``prompt``: an item the annotator undid, shown again if it is still open to them (else the next one)."""
        user, csrf = auth(request)
        c = conn()
        mode = db.mode(c)
        prompt_id = db.next_prompt(c, user.id, lease_seconds, wanted=prompt)
        done, total = db.progress(c, user.id)
        status = (f'<p><label for="progress">Progress: {done} of {total} done</label> '
                  f'<progress id="progress" max="{max(total, 1)}" value="{done}">{done} of {total}</progress></p>')
        undo = '<button type="button" id="undo">Undo last submission</button>'
        tail = '<p id="message" role="alert"></p><p id="status" class="visually-hidden" aria-live="polite"></p>'
        if prompt_id is None:
            body = f'<main>{status}<h2>All done</h2><p>No items are left for you. Thank you!</p>{undo}{tail}</main>'
            return _html("All done", _header(user, csrf, TITLES[mode]) + body + _script(request), request, csrf=csrf)
        text, candidates = db.item(c, prompt_id, user.id)
        if mode == "thumbs":
            items = "".join(_thumbs_candidate(i, row["id"], row["text"], len(candidates)) for i, row in enumerate(candidates, start=1))
            judge = (f'<h2 id="list-label">Responses</h2>'
                     f'<p id="help">Give each response a thumbs up (good) or down (bad): use its buttons, or focus it and '
                     f'press U or D (Arrow Up/Down moves between responses).</p>'
                     f'<ol id="thumbs" aria-labelledby="list-label">{items}</ol>'
                     f'<div class="actions"><button type="button" id="judge">Submit judgements</button>')
        else:
            items = "".join(_candidate(i, row["id"], row["text"], len(candidates)) for i, row in enumerate(candidates, start=1))
            judge = (f'<h2 id="list-label">Responses, best first</h2>'
                     f'<p id="help">Drag a response, or focus it and press Alt+Arrow Up/Down (or use its Up/Down buttons), '
                     f'to order them best to worst. Tick “Tie” to rank a response equal to the one above it.</p>'
                     f'<ol id="ranking" aria-labelledby="list-label">{items}</ol>'
                     f'<div class="actions"><button type="button" id="rank">Submit ranking</button>')
        body = (f'<main data-prompt="{prompt_id}" data-submission="{secrets.token_urlsafe(16)}">{status}'
                f'<h2 id="prompt-label">Prompt</h2><div class="prompt" aria-labelledby="prompt-label">{escape(text)}</div>'
                f'{judge}<button type="button" id="skip">Skip</button>'
                f'<label>Reason for flagging <input id="reason" maxlength="500"></label>'
                f'<button type="button" id="flag">Flag as problematic</button>{undo}</div>{tail}</main>')
        return _html("Judge" if mode == "thumbs" else "Rank", _header(user, csrf, TITLES[mode]) + body + _script(request),
                     request, csrf=csrf)

    @app.post("/api/submit")
    async def submit(request: Request) -> Response:
        return await run_in_threadpool(store, request, await request.body())

    def store(request: Request, raw: bytes) -> Response:
        user, _ = auth(request, csrf=request.headers.get("X-CSRF-Token", ""))
        if len(raw) > MAX_BODY_BYTES:
            raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # bad JSON, not UTF-8, or nested past Python's recursion limit
            raise HTTPException(422, "the body must be JSON") from None
        sid, prompt_id, action = (body.get(k) if isinstance(body, dict) else None for k in ("submission_id", "prompt_id", "action"))
        if (not isinstance(sid, str) or not 8 <= len(sid) <= 128 or type(prompt_id) is not int or not 0 < prompt_id <= db.MAX_ID
                or action not in ACTIONS):
            raise HTTPException(422, "need submission_id (8-128 characters), prompt_id (a positive integer) and action "
                                     "(rank, judge, skip or flag)")
        reason = body.get("reason")
        if isinstance(reason, str) and len(reason) > MAX_REASON_CHARS:
            raise HTTPException(422, f"a flag reason is at most {MAX_REASON_CHARS} characters")
        try:
            stored = db.submit(conn(), user.id, sid, prompt_id, ACTIONS[action], body.get("ranking"),
                               reason if isinstance(reason, str) else None, body.get("thumbs"))
        except db.Conflict as exc:
            raise HTTPException(409, str(exc)) from None
        except db.Invalid as exc:
            raise HTTPException(422, str(exc)) from None
        return JSONResponse({"submission_id": sid, "stored": stored})

    @app.post("/api/undo")
    def undo(request: Request) -> Response:
        user, _ = auth(request, csrf=request.headers.get("X-CSRF-Token", ""))
        return JSONResponse({"prompt_id": db.undo(conn(), user.id, lease_seconds)})

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> Response:
        user, csrf = auth(request, admin=True)
        c = conn()
        mode = db.mode(c)
        rows = "".join(f'<tr><th scope="row">{escape(r["name"])}{" (admin)" if r["is_admin"] else ""}</th>'
                       f'<td>{r["done"]}</td><td>{r["skipped"]}</td><td>{r["flagged"]}</td><td>{r["undone"]}</td></tr>'
                       for r in db.annotator_progress(c))
        if mode == "thumbs":
            agree = thumbs_agreement(c)
            rate = "n/a" if agree["rate"] is None else f'{agree["rate"]:.3f}'
            agreed = (f'<h2>Agreement</h2><p>Same thumb from two annotators: <strong id="thumbs-agreement">{rate}</strong> '
                      f'over {agree["comparisons"]} comparisons on {agree["candidates"]} responses judged by several annotators.</p>')
        else:
            agree = agreement(c)
            pairs = "".join(f'<tr><th scope="row">{escape(p["annotators"][0])} / {escape(p["annotators"][1])}</th>'
                            f'<td>{p["tau"]:.3f}</td><td>{p["items"]}</td></tr>' for p in agree["pairs"])
            mean = "n/a" if agree["mean_tau"] is None else f'{agree["mean_tau"]:.3f}'
            agreed = (f'<h2>Agreement</h2><p>Mean Kendall’s tau-b: <strong id="mean-tau">{mean}</strong> over {agree["comparisons"]} '
                      f'comparisons on {agree["items"]} items ranked by several annotators.</p>'
                      f'<table><thead><tr><th scope="col">Annotators</th><th scope="col">tau-b</th><th scope="col">Items</th></tr></thead>'
                      f'<tbody>{pairs}</tbody></table>')
        prompts = c.execute("SELECT COUNT(*) FROM prompts").fetchone()[0]
        kind = {"rank": "ranking", "thumbs": "thumbs up/down"}[mode]
        body = (f'<main><p>A {kind} project: {prompts} items, overlap {db.settings(c)["overlap"]}.</p>'
                f'<h2>Progress per annotator</h2><table><thead><tr><th scope="col">Annotator</th>'
                f'<th scope="col">{"Judged" if mode == "thumbs" else "Ranked"}</th>'
                f'<th scope="col">Skipped</th><th scope="col">Flagged</th><th scope="col">Undone</th></tr></thead><tbody>{rows}</tbody></table>'
                f'{agreed}<h2>Export</h2><ul>'
                + "".join(f'<li><a href="/admin/export?format={f}" download>{f} (JSONL)</a></li>' for f in MODE_FORMATS[mode])
                + '</ul></main>')
        return _html("Admin", _header(user, csrf, "Feedback project") + body, request, csrf=csrf)

    @app.get("/admin/export")
    def export(request: Request, format: str | None = None) -> Response:
        """``format``: pairs or rankings (a ranking project), kto (a thumbs project); none: the project's own."""
        auth(request, admin=True)
        try:
            format = check_format(conn(), format)
        except AdaptlabError as exc:
            raise HTTPException(422, str(exc)) from None
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in export_rows(conn(), format))
        return Response(text, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="feedback-{format}.jsonl"'})

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        return await run_in_threadpool(sign_out, request, await request.body())

    def sign_out(request: Request, raw: bytes) -> Response:
        form = parse_qs(raw.decode("utf-8", "replace"))
        auth(request, csrf=request.headers.get("X-CSRF-Token") or form.get("csrf", [""])[0])
        db.logout(conn(), request.cookies[COOKIE])
        response = _html("Signed out", "<main><h1>Signed out</h1><p>Open your login link to sign in again.</p></main>", request)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    return app


def serve_in_background(directory: Path, timeout: float = 20.0):
    """The ranking app under uvicorn on a free loopback port, in a daemon thread: a context manager yielding its base
    URL (for tests and the README's screenshot script; `adaptlab feedback serve` runs it in the foreground)."""
    from adaptlab.loopback import serve_in_background as in_background

    return in_background(create_app(directory), "the ranking app", timeout)

