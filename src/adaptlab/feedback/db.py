"""The feedback project's SQLite store: one file, WAL mode, one short transaction per write.

WAL lets the web server's readers run while one writer commits; ``BEGIN IMMEDIATE`` takes the write lock
up front so a submission's checks and insert are atomic. Submissions are keyed by a client-generated id,
so a retried request (lost response, double click) finds its own row instead of storing a second one.
A partial unique index keeps one live submission per (annotator, prompt): nobody annotates an item twice.

An item shown to an annotator is reserved for them by a lease (one per annotator) that counts towards the
item's overlap until it expires: annotators working at once are shown different items, so a submission for a
shown item is not refused, and live submissions + live leases never exceed the overlap (each write keeps that).

A project is in one of two modes (``project.mode``): ``rank`` (order an item's candidates: a ``ranked`` submission
holds the ranking) or ``thumbs`` (a thumbs up or down for each candidate: a ``judged`` submission holds them). Both
go through the same submission, lease and undo code; only the judgement stored with a submission differs.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adaptlab.errors import AdaptlabError

DB_NAME = "feedback.sqlite"  # adaptlab.rlhf.preferences recognises a project by this file
SCHEMA_VERSION = 4  # 2: annotators.order_seed (candidates shown in a per-annotator order); 3: leases; 4: modes, thumbs
MODES = ("rank", "thumbs")  # what an annotator does with an item's candidates: order them, or judge each up or down
STATUSES = ("ranked", "judged", "skipped", "flagged")
DONE = {"rank": "ranked", "thumbs": "judged"}  # the status of a submission that holds the mode's judgement
SESSION_SECONDS = 7 * 24 * 3600
LEASE_SECONDS = 300  # long enough to rank one item; an abandoned item goes back to the others this soon
LEASE_RANGE = (10, 24 * 3600)  # --lease-seconds bounds (see check_lease_seconds)
MAX_ID = 2**63 - 1  # SQLite's largest integer: a bigger id in a request is refused, not an OverflowError

LEASES = """
CREATE TABLE IF NOT EXISTS leases (annotator_id INTEGER PRIMARY KEY REFERENCES annotators(id),
                                   prompt_id INTEGER NOT NULL REFERENCES prompts(id), expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_prompt ON leases (prompt_id, expires);
"""

# thumbs: {"up": [candidate ids], "down": [candidate ids]}, every candidate of the item in exactly one of them
SUBMISSIONS = """
CREATE TABLE {name} (id TEXT PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id),
                     prompt_id INTEGER NOT NULL REFERENCES prompts(id),
                     status TEXT NOT NULL CHECK (status IN ('ranked', 'judged', 'skipped', 'flagged')),
                     ranking TEXT, reason TEXT, created REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0, thumbs TEXT);
"""
SUBMISSION_INDEXES = """
CREATE UNIQUE INDEX one_live_per_item ON submissions (annotator_id, prompt_id) WHERE undone = 0;
CREATE INDEX live_by_prompt ON submissions (prompt_id) WHERE undone = 0;
"""

# Version 3 -> 4: the project gets its mode (rank: what every older project is), and submissions may be 'judged'
# and hold thumbs. SQLite cannot change a CHECK constraint in place, so the table is rebuilt (rows and rowids kept).
UPGRADE_TO_4 = ("ALTER TABLE project ADD COLUMN mode TEXT NOT NULL DEFAULT 'rank' CHECK (mode IN ('rank', 'thumbs'));"
                + SUBMISSIONS.format(name="submissions_v4")
                + "INSERT INTO submissions_v4 (rowid, id, annotator_id, prompt_id, status, ranking, reason, created, undone) "
                  "SELECT rowid, id, annotator_id, prompt_id, status, ranking, reason, created, undone FROM submissions;"
                  "DROP TABLE submissions; ALTER TABLE submissions_v4 RENAME TO submissions;" + SUBMISSION_INDEXES)

SCHEMA = """
CREATE TABLE project (id INTEGER PRIMARY KEY CHECK (id = 1), overlap INTEGER NOT NULL, k INTEGER NOT NULL,
                      model TEXT, created REAL NOT NULL,
                      mode TEXT NOT NULL DEFAULT 'rank' CHECK (mode IN ('rank', 'thumbs')));
CREATE TABLE prompts (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE candidates (id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id),
                         text TEXT NOT NULL, source TEXT, UNIQUE (prompt_id, text));
CREATE TABLE annotators (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE,
                         is_admin INTEGER NOT NULL DEFAULT 0, order_seed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id),
                       csrf TEXT NOT NULL, expires REAL NOT NULL);
""" + SUBMISSIONS.format(name="submissions") + SUBMISSION_INDEXES + LEASES

# Items open to annotator :me at time :now (only item :prompt unless it is NULL): no live submission of theirs,
# and either their own live lease or room left beside the live submissions and everyone else's live leases.
# ``taken`` (submissions + others' leases) orders the least-covered first.
_OPEN = """
SELECT id, live + held AS taken FROM (
  SELECT p.id, (SELECT COUNT(*) FROM submissions s WHERE s.prompt_id = p.id AND s.undone = 0) AS live,
    (SELECT COUNT(*) FROM leases l WHERE l.prompt_id = p.id AND l.annotator_id != :me AND l.expires > :now) AS held,
    EXISTS (SELECT 1 FROM leases l WHERE l.annotator_id = :me AND l.prompt_id = p.id AND l.expires > :now) AS mine
  FROM prompts p
  WHERE (:prompt IS NULL OR p.id = :prompt)
    AND NOT EXISTS (SELECT 1 FROM submissions s WHERE s.prompt_id = p.id AND s.annotator_id = :me AND s.undone = 0))
WHERE mine OR live + held < (SELECT overlap FROM project)
"""


def _open_args(annotator_id: int, prompt_id: int | None = None) -> dict:
    return {"me": annotator_id, "now": time.time(), "prompt": prompt_id}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Conflict(Exception):
    """The request clashes with stored data (HTTP 409)."""


class Invalid(Exception):
    """The request is malformed for this item (HTTP 422)."""


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    is_admin: bool


def connect(directory: Path, create: bool = False) -> sqlite3.Connection:
    """An autocommit connection to the project's database (created, with the schema, when ``create``)."""
    path = Path(directory) / DB_NAME
    if create and path.exists():
        raise AdaptlabError(f"'{directory}' already holds a feedback project")
    if not create and not path.exists():
        raise AdaptlabError(f"'{directory}' is not a feedback project (no {DB_NAME}); create one with `adaptlab feedback new`")
    if not create:
        _check_readable(path)  # read-only: a file that is not ours is refused before anything writes to it
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:  # "file is not a database": damaged or not ours
        conn.close()
        raise AdaptlabError(f"'{path}' is not a readable feedback database ({exc}); restore it from a backup") from None
    conn.execute("PRAGMA foreign_keys=ON")
    if create:
        conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 1:  # a project made before candidate orders were shuffled: give each annotator a seed
        conn.executescript("BEGIN IMMEDIATE; ALTER TABLE annotators ADD COLUMN order_seed INTEGER NOT NULL DEFAULT 0; "
                           "UPDATE annotators SET order_seed = abs(random() % 2147483647); PRAGMA user_version = 2; COMMIT;")
        version = 2
    if version == 2:  # a project made before items were reserved: add the (empty) leases table
        conn.executescript(f"BEGIN IMMEDIATE; {LEASES} PRAGMA user_version = 3; COMMIT;")
        version = 3
    if version == 3:  # a project made before thumbs mode: a ranking project, its submissions kept as they are
        conn.executescript(f"BEGIN IMMEDIATE; {UPGRADE_TO_4} PRAGMA user_version = 4; COMMIT;")
        version = 4
    if version != SCHEMA_VERSION:
        conn.close()
        raise AdaptlabError(f"'{path}' has schema version {version}; this adaptlab reads version {SCHEMA_VERSION}")
    return conn


def _check_readable(path: Path) -> None:
    """Refuse, without changing a byte of it, a ``feedback.sqlite`` that is not an adaptlab feedback database: a
    directory, an empty file, another program's SQLite file (connecting read-write would switch it to WAL mode)."""
    if not path.is_file():
        raise AdaptlabError(f"'{path}' is not a file, so not a feedback database; move it, or give another project")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # "file is not a database": damaged or not ours
        raise AdaptlabError(f"'{path}' is not a readable feedback database ({exc}); restore it from a backup") from None
    if version > SCHEMA_VERSION:
        raise AdaptlabError(f"'{path}' has schema version {version}; this adaptlab reads version {SCHEMA_VERSION}")
    if version < 1 or not {"project", "prompts", "candidates"} <= tables:
        raise AdaptlabError(f"'{path}' is not a feedback database made by adaptlab (schema version {version}); "
                            "restore it from a backup, or give another project")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def settings(conn: sqlite3.Connection) -> sqlite3.Row:
    return conn.execute("SELECT overlap, k, model, mode FROM project").fetchone()


def mode(conn: sqlite3.Connection) -> str:
    """``rank`` or ``thumbs`` (projects made before modes existed are ``rank``)."""
    return settings(conn)["mode"]


def add_annotator(conn: sqlite3.Connection, name: str, admin: bool) -> str:
    """Register ``name`` and return its login token; only the token's hash is stored."""
    token = secrets.token_urlsafe(32)
    try:
        with transaction(conn):
            conn.execute("INSERT INTO annotators (name, token_hash, is_admin, order_seed) VALUES (?, ?, ?, ?)",
                         (name, sha256(token), int(admin), secrets.randbits(31)))
    except sqlite3.IntegrityError:
        raise AdaptlabError(f"an annotator named '{name}' already exists") from None
    return token


def login(conn: sqlite3.Connection, token: str) -> tuple[str, str] | None:
    """(session id, CSRF token) for a valid login token, else None. Expired sessions are purged here."""
    row = conn.execute("SELECT id FROM annotators WHERE token_hash = ?", (sha256(token),)).fetchone()
    if row is None:
        return None
    session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (sha256(session), row["id"], csrf, time.time() + SESSION_SECONDS))
    return session, csrf


def session(conn: sqlite3.Connection, session_id: str) -> tuple[Annotator, str] | None:
    """The annotator and CSRF token of a live session, else None."""
    row = conn.execute(
        "SELECT a.id, a.name, a.is_admin, s.csrf FROM sessions s JOIN annotators a ON a.id = s.annotator_id "
        "WHERE s.id_hash = ? AND s.expires > ?", (sha256(session_id), time.time())).fetchone()
    return None if row is None else (Annotator(row["id"], row["name"], bool(row["is_admin"])), row["csrf"])


def logout(conn: sqlite3.Connection, session_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE id_hash = ?", (sha256(session_id),))


def check_lease_seconds(seconds: float) -> None:
    """Refuse a lease that could expire while its page loads, or one that keeps an abandoned item from everyone."""
    low, high = LEASE_RANGE
    if not low <= seconds <= high:
        raise AdaptlabError(f"--lease-seconds must be from {low} to {high}, not {seconds}")


def next_prompt(conn: sqlite3.Connection, annotator_id: int, lease_seconds: float = LEASE_SECONDS,
                wanted: int | None = None) -> int | None:
    """Reserve an item open to the annotator for ``lease_seconds`` and return it (None when none is open). First
    choice: ``wanted`` if they undid it; then the item they already hold (a reload shows the same one); then the
    least-covered. The new lease replaces their old one, so nobody can hoard items by opening pages."""
    with transaction(conn):
        held = conn.execute("SELECT prompt_id FROM leases WHERE annotator_id = ?", (annotator_id,)).fetchone()
        redo = wanted is not None and may_redo(conn, annotator_id, wanted)
        args = _open_args(annotator_id) | {"wanted": wanted if redo else None, "held": held[0] if held else None}
        row = conn.execute(f"{_OPEN} ORDER BY id IS :wanted DESC, id IS :held DESC, taken, id LIMIT 1", args).fetchone()
        if row is None:
            conn.execute("DELETE FROM leases WHERE annotator_id = ?", (annotator_id,))
            return None
        conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (annotator_id, row["id"], args["now"] + lease_seconds))
    return row["id"]


def may_redo(conn: sqlite3.Connection, annotator_id: int, prompt_id: int) -> bool:
    """Whether the annotator undid a submission for this item and has not redone it (they may see it again)."""
    rows = conn.execute("SELECT undone FROM submissions WHERE annotator_id = ? AND prompt_id = ?", (annotator_id, prompt_id)).fetchall()
    return any(r["undone"] for r in rows) and not any(not r["undone"] for r in rows)


def item(conn: sqlite3.Connection, prompt_id: int, annotator_id: int | None = None) -> tuple[str, list[sqlite3.Row]]:
    """The prompt's text and its candidates (id, text): in import order, or, for an annotator, shuffled by their
    stored seed and the prompt (the same order on every visit; different annotators see different orders, so the
    position a candidate is shown at does not bias the rankings)."""
    prompt = conn.execute("SELECT text FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
    if prompt is None:
        raise Invalid(f"unknown prompt {prompt_id}")
    candidates = conn.execute("SELECT id, text FROM candidates WHERE prompt_id = ? ORDER BY id", (prompt_id,)).fetchall()
    if annotator_id is not None:
        seed = conn.execute("SELECT order_seed FROM annotators WHERE id = ?", (annotator_id,)).fetchone()["order_seed"]
        random.Random(f"{seed}:{prompt_id}").shuffle(candidates)
    return prompt["text"], candidates


def progress(conn: sqlite3.Connection, annotator_id: int) -> tuple[int, int]:
    """(items this annotator has done, items done + still available to them)."""
    done = conn.execute("SELECT COUNT(*) FROM submissions WHERE annotator_id = ? AND undone = 0", (annotator_id,)).fetchone()[0]
    open_ = conn.execute(f"SELECT COUNT(*) FROM ({_OPEN})", _open_args(annotator_id)).fetchone()[0]
    return done, done + open_


def submit(conn: sqlite3.Connection, annotator_id: int, submission_id: str, prompt_id: int, status: str,
           ranking: list[list[int]] | None, reason: str | None, thumbs: dict | None = None) -> bool:
    """Store one submission in one transaction; False when this exact id was already stored (a retry). Accepted
    while the item is open to the annotator: reserved for them, or (their lease expired, or they never held one)
    still short of the overlap counting the others' leases; the stored submission takes the place of their lease.
    ``ranked`` (with ``ranking``) in a rank project, ``judged`` (with ``thumbs``) in a thumbs project."""
    if status not in STATUSES:
        raise Invalid(f"action must be one of {', '.join(STATUSES)}")
    if status == "flagged" and not (reason or "").strip():
        raise Invalid("a flag needs a reason")
    project_mode = mode(conn)
    if status in DONE.values() and status != DONE[project_mode]:
        raise Invalid(f"this is a {project_mode} project: submit {'a ranking' if project_mode == 'rank' else 'thumbs'}, "
                      f"not {'a ranking' if status == 'ranked' else 'thumbs'}")
    with transaction(conn):
        existing = conn.execute("SELECT annotator_id, prompt_id FROM submissions WHERE id = ?", (submission_id,)).fetchone()
        if existing is not None:
            if existing["annotator_id"] != annotator_id or existing["prompt_id"] != prompt_id:
                raise Conflict("this submission id is already used")
            return False
        _, candidates = item(conn, prompt_id)
        if conn.execute("SELECT 1 FROM submissions WHERE annotator_id = ? AND prompt_id = ? AND undone = 0",
                        (annotator_id, prompt_id)).fetchone():
            raise Conflict("you already submitted this item; undo it first")
        if conn.execute(_OPEN, _open_args(annotator_id, prompt_id)).fetchone() is None:
            raise Conflict("this item is not open to you: it already has its annotators, counting those it is reserved for")
        if status == "ranked":
            _check_ranking(ranking, {c["id"] for c in candidates})
        if status == "judged":
            thumbs = _check_thumbs(thumbs, {c["id"] for c in candidates})
        conn.execute("INSERT INTO submissions (id, annotator_id, prompt_id, status, ranking, reason, created, thumbs) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (submission_id, annotator_id, prompt_id, status,
                      json.dumps(ranking) if status == "ranked" else None, (reason or "").strip() or None, time.time(),
                      json.dumps(thumbs) if status == "judged" else None))
        conn.execute("DELETE FROM leases WHERE annotator_id = ? AND prompt_id = ?", (annotator_id, prompt_id))
    return True


def _check_ranking(ranking, candidate_ids: set[int]) -> None:
    if (not isinstance(ranking, list) or not ranking
            or not all(isinstance(g, list) and g and all(type(c) is int for c in g) for g in ranking)):
        raise Invalid("ranking must be a non-empty list of non-empty lists of candidate ids, best first")
    flat = [c for group in ranking for c in group]
    if len(flat) != len(set(flat)) or set(flat) != candidate_ids:
        raise Invalid("ranking must list each of this item's candidates exactly once")


def _check_thumbs(thumbs, candidate_ids: set[int]) -> dict[str, list[int]]:
    """``{"up": [ids], "down": [ids]}`` naming each of the item's candidates exactly once (sorted, as stored)."""
    if (not isinstance(thumbs, dict) or set(thumbs) != {"up", "down"}
            or not all(isinstance(v, list) and all(type(c) is int for c in v) for v in thumbs.values())):
        raise Invalid('thumbs must be {"up": [candidate ids], "down": [candidate ids]}')
    flat = thumbs["up"] + thumbs["down"]
    if len(flat) != len(set(flat)) or set(flat) != candidate_ids:
        raise Invalid("thumbs must judge each of this item's candidates exactly once, up or down")
    return {"up": sorted(thumbs["up"]), "down": sorted(thumbs["down"])}


def undo(conn: sqlite3.Connection, annotator_id: int, lease_seconds: float = LEASE_SECONDS) -> int | None:
    """Mark the annotator's latest live submission undone; returns its prompt id (None if nothing to undo). The
    item is reserved for them (they are sent back to it), so nobody else fills the place they are about to redo."""
    with transaction(conn):
        row = conn.execute("SELECT id, prompt_id FROM submissions WHERE annotator_id = ? AND undone = 0 "
                           "ORDER BY created DESC, rowid DESC LIMIT 1", (annotator_id,)).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE submissions SET undone = 1 WHERE id = ?", (row["id"],))
        conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (annotator_id, row["prompt_id"], time.time() + lease_seconds))
    return row["prompt_id"]


def live_submissions(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every live submission with its annotator's name, oldest first."""
    return conn.execute("SELECT s.*, a.name AS annotator FROM submissions s JOIN annotators a ON a.id = s.annotator_id "
                        "WHERE s.undone = 0 ORDER BY s.created, s.rowid").fetchall()


def annotator_progress(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Per annotator: live done (ranked or judged)/skipped/flagged counts and undone count."""
    return conn.execute(
        "SELECT a.name, a.is_admin, "
        "COALESCE(SUM(s.undone = 0 AND s.status IN ('ranked', 'judged')), 0) AS done, "
        "COALESCE(SUM(s.undone = 0 AND s.status = 'skipped'), 0) AS skipped, "
        "COALESCE(SUM(s.undone = 0 AND s.status = 'flagged'), 0) AS flagged, "
        "COALESCE(SUM(s.undone), 0) AS undone "
        "FROM annotators a LEFT JOIN submissions s ON s.annotator_id = a.id GROUP BY a.id ORDER BY a.name").fetchall()
