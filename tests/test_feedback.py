"""The human-feedback ranking app: store, assignment and reservations, export, agreement, every route, concurrency,
a browser."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adaptlab.cli.feedback import feedback_app
from adaptlab.errors import AdaptlabError
from adaptlab.feedback import db as dbmod
from adaptlab.feedback import project
from adaptlab.feedback.app import create_app, serve_in_background
from adaptlab.rlhf.preferences import read_preferences

EVIL = ["<script>window.__xss=1</script>", '<img src=x onerror="window.__xss=1">',
        '<a href="javascript:window.__xss=1">click me</a>', "a plain, harmless answer"]


def write_candidates(path: Path, n_prompts: int, k: int = 4, evil: bool = False) -> Path:
    rows = [{"prompt": "Evil <b>prompt</b> <script>window.__xss=1</script>", "responses": EVIL}] if evil else []
    rows += [{"prompt": f"prompt {i}", "responses": [f"answer {i}.{j}" for j in range(k)]} for i in range(n_prompts - len(rows))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_project(tmp_path: Path, n_prompts: int = 3, overlap: int = 2, evil: bool = False, mode: str = "rank") -> Path:
    directory = tmp_path / "project"
    project.new_project(directory, candidates_path=write_candidates(tmp_path / "c.jsonl", n_prompts, evil=evil), overlap=overlap,
                        mode=mode)
    return directory


def db(directory: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(directory / "feedback.sqlite")
    conn.row_factory = sqlite3.Row
    return conn


def page_state(html: str) -> dict:
    """What the ranking page's script reads: CSRF token, prompt, submission id, candidate ids in shown order."""
    found = lambda pattern: (m.group(1) if (m := re.search(pattern, html)) else None)
    prompt = found(r'data-prompt="(\d+)"')
    return {"csrf": found(r'name="csrf-token" content="([^"]*)"'), "prompt": int(prompt) if prompt else None,
            "submission": found(r'data-submission="([^"]+)"'), "ids": [int(i) for i in re.findall(r'data-id="(\d+)"', html)]}


def signed_in(app, token: str) -> tuple[TestClient, dict]:
    client = TestClient(app)
    response = client.get(f"/login?token={token}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    return client, page_state(client.get("/").text)


def rank(client: TestClient, state: dict, ranking=None, action: str = "rank", sid: str | None = None, **extra) -> httpx.Response:
    body = {"submission_id": sid or state["submission"], "prompt_id": state["prompt"], "action": action,
            "ranking": [[i] for i in state["ids"]] if ranking is None and action == "rank" else ranking, **extra}
    return client.post("/api/submit", json=body, headers={"X-CSRF-Token": state["csrf"]})


def judge(client: TestClient, state: dict, up=None, thumbs=None, sid: str | None = None) -> httpx.Response:
    """Submit thumbs for the shown item: ``up`` the candidate ids given a thumbs up (default: the first half as
    shown), the rest down; or ``thumbs``, the body's field as given."""
    if thumbs is None:
        up = set(state["ids"][: len(state["ids"]) // 2] if up is None else up)
        thumbs = {"up": [i for i in state["ids"] if i in up], "down": [i for i in state["ids"] if i not in up]}
    body = {"submission_id": sid or state["submission"], "prompt_id": state["prompt"], "action": "judge", "thumbs": thumbs}
    return client.post("/api/submit", json=body, headers={"X-CSRF-Token": state["csrf"]})


@pytest.fixture
def setup(tmp_path):
    directory = make_project(tmp_path, evil=True)
    tokens = {name: project.add_annotator(directory, name, admin=name == "boss") for name in ("alice", "bob", "carol", "boss")}
    return directory, create_app(directory), tokens


def test_tokens_are_stored_hashed(setup):
    directory, _, tokens = setup
    stored = {r["name"]: r["token_hash"] for r in db(directory).execute("SELECT name, token_hash FROM annotators")}
    assert all(tokens[name] not in stored[name] and len(stored[name]) == 64 for name in tokens)
    assert db(directory).execute("PRAGMA user_version").fetchone()[0] == 4
    assert db(directory).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_login_cookie_and_forbidden_cases(setup):
    directory, app, tokens = setup
    anonymous = TestClient(app)
    for url in ("/", "/admin", "/admin/export?format=pairs"):
        response = anonymous.get(url)
        assert response.status_code == 401 and "text/html" in response.headers["content-type"] and "Traceback" not in response.text
    for path in ("/api/submit", "/api/undo"):
        response = anonymous.post(path, json={})
        assert response.status_code == 401 and response.json()["error"]["status"] == 401
    assert anonymous.get("/login?token=not-a-token").status_code == 401
    assert anonymous.get("/login").status_code == 401
    anonymous.cookies.set("adaptlab_session", "forged")
    assert anonymous.get("/").status_code == 401

    login = TestClient(app).get(f"/login?token={tokens['alice']}", follow_redirects=False)
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie

    alice, state = signed_in(app, tokens["alice"])
    body = {"submission_id": "s" * 16, "prompt_id": state["prompt"], "action": "skip"}
    assert alice.post("/api/submit", json=body).status_code == 403
    assert alice.post("/api/submit", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert alice.post("/api/undo").status_code == 403
    assert alice.get("/admin").status_code == 403
    assert alice.get("/admin/export?format=pairs").status_code == 403
    assert alice.post("/logout").status_code == 403
    assert db(directory).execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0

    _, bob_state = signed_in(app, tokens["bob"])
    assert bob_state["csrf"] != state["csrf"]
    assert alice.post("/api/submit", json=body, headers={"X-CSRF-Token": bob_state["csrf"]}).status_code == 403

    signed_out = alice.post("/logout", data={"csrf": state["csrf"]})
    assert signed_out.status_code == 200 and "Signed out" in signed_out.text
    alice.cookies.clear()
    alice.cookies.set("adaptlab_session", login.cookies["adaptlab_session"])  # the other session still works
    assert alice.get("/").status_code == 200
    db(directory).execute("UPDATE sessions SET expires = 0").connection.commit()
    assert alice.get("/").status_code == 401  # expired


def test_submit_retry_conflict_validation_and_undo(setup):
    directory, app, tokens = setup
    alice, state = signed_in(app, tokens["alice"])
    bob, bob_state = signed_in(app, tokens["bob"])
    assert state["prompt"] != bob_state["prompt"]  # alice's item is reserved for her: bob is shown another
    ids = state["ids"]
    invalid = [ids[:-1], ids + ids[:1], ids[:-1] + [999], "nope", [[]]]
    for ranking in invalid:
        shaped = ranking if isinstance(ranking, str) or ranking == [[]] else [[i] for i in ranking]
        assert rank(alice, state, shaped).status_code == 422
    assert rank(alice, state, action="flag", reason="  ").status_code == 422
    assert alice.post("/api/submit", content=b"{not json", headers={"X-CSRF-Token": state["csrf"]}).status_code == 422
    assert rank(alice, state, action="dance").status_code == 422

    first = rank(alice, state, [[ids[2]], [ids[0], ids[1]], [ids[3]]])
    assert first.status_code == 200 and first.json()["stored"] is True
    retry = rank(alice, state, [[ids[2]], [ids[0], ids[1]], [ids[3]]])
    assert retry.status_code == 200 and retry.json()["stored"] is False
    assert rank(bob, bob_state, sid=state["submission"]).status_code == 409  # another annotator reuses the id
    assert rank(alice, state, sid="another-id-1234").status_code == 409  # same item twice
    rows = db(directory).execute("SELECT * FROM submissions").fetchall()
    assert len(rows) == 1 and json.loads(rows[0]["ranking"]) == [[ids[2]], [ids[0], ids[1]], [ids[3]]]

    nxt = page_state(alice.get("/").text)
    assert nxt["prompt"] != state["prompt"]
    undone = alice.post("/api/undo", headers={"X-CSRF-Token": state["csrf"]})
    assert undone.json() == {"prompt_id": state["prompt"]}
    assert db(directory).execute("SELECT undone FROM submissions").fetchone()[0] == 1
    again = page_state(alice.get(f"/?prompt={state['prompt']}").text)
    assert again["prompt"] == state["prompt"] and again["submission"] != state["submission"]
    assert page_state(bob.get(f"/?prompt={nxt['prompt'] + 1}").text)["prompt"] == bob_state["prompt"]  # no redo: ignored
    assert rank(alice, again, action="flag", reason="unsafe content").json()["stored"] is True
    assert alice.post("/api/undo", headers={"X-CSRF-Token": state["csrf"]}).json() == {"prompt_id": state["prompt"]}
    assert bob.post("/api/undo", headers={"X-CSRF-Token": bob_state["csrf"]}).json() == {"prompt_id": None}
    assert db(directory).execute("SELECT COUNT(*) FROM submissions WHERE undone = 0").fetchone()[0] == 0


def test_assignment_never_repeats_and_respects_overlap(setup):
    directory, app, tokens = setup
    seen: dict[str, list[int]] = {}
    for name in ("alice", "bob", "carol"):
        client, _ = signed_in(app, tokens[name])
        seen[name] = []
        html = client.get("/").text
        state = page_state(html)
        while state["prompt"] is not None:
            seen[name].append(state["prompt"])
            assert rank(client, state, action="skip" if len(seen[name]) == 2 else "rank").status_code == 200
            html = client.get("/").text
            state = page_state(html)
        assert "All done" in html and f"{len(seen[name])} of {len(seen[name])} done" in html
    assert sorted(seen["alice"]) == [1, 2, 3] and sorted(seen["bob"]) == [1, 2, 3]
    assert seen["carol"] == []  # every item already has its 2 annotators
    counts = db(directory).execute("SELECT prompt_id, COUNT(*) FROM submissions GROUP BY prompt_id").fetchall()
    assert [tuple(r) for r in counts] == [(1, 2), (2, 2), (3, 2)]


def expire_lease(directory: Path, name: str) -> None:
    conn = db(directory)
    conn.execute("UPDATE leases SET expires = 0 WHERE annotator_id = (SELECT id FROM annotators WHERE name = ?)", (name,))
    conn.commit()


def judgements(directory: Path) -> dict[int, int]:
    """Live submissions per item (0 for an item nobody judged)."""
    return dict(db(directory).execute("SELECT p.id, COUNT(s.id) FROM prompts p LEFT JOIN submissions s "
                                      "ON s.prompt_id = p.id AND s.undone = 0 GROUP BY p.id").fetchall())


def test_shown_items_are_reserved_until_the_lease_expires(tmp_path):
    """Issue 47: annotators at once are shown different items; a reload keeps one's item; an expired lease returns
    the item to the pool; a late submission is taken while the item needs judgements and refused once it does not."""
    directory = make_project(tmp_path, n_prompts=4, overlap=1)
    app = create_app(directory, lease_seconds=60)
    (a, sa), (b, sb), (c, sc), (d, sd) = (signed_in(app, project.add_annotator(directory, n)) for n in "abcd")
    assert [sa["prompt"], sb["prompt"], sc["prompt"], sd["prompt"]] == [1, 2, 3, 4]
    assert page_state(a.get("/").text)["prompt"] == 1  # a reload: still a's, and still one lease per annotator
    expires = [r[0] - time.time() for r in db(directory).execute("SELECT expires FROM leases")]
    assert len(expires) == 4 and all(50 < left <= 60 for left in expires)
    e, se = signed_in(app, project.add_annotator(directory, "e"))
    assert se["prompt"] is None  # every item is reserved: nothing for a fifth annotator yet

    expire_lease(directory, "b")
    se = page_state(e.get("/").text)
    assert se["prompt"] == 2  # b's expired item went back to the pool
    refused = rank(b, sb)
    assert refused.status_code == 409 and "reserved" in refused.json()["error"]["message"]  # overlap 1: e holds it
    expire_lease(directory, "c")
    assert rank(c, sc).status_code == 200  # expired, but nobody took it and it still needs a judgement
    for client, state in ((a, sa), (d, sd), (e, se)):
        assert rank(client, state).status_code == 200
    assert judgements(directory) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert db(directory).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 1  # only b's, expired


def test_overlap_is_exact_with_leases_undo_and_redo(tmp_path):
    """An undone item stays reserved for the annotator who undid it, so a redo never exceeds the overlap; once
    that lease expires and another annotator fills the place, the redo is refused."""
    directory = make_project(tmp_path, n_prompts=2, overlap=2)
    app = create_app(directory)
    (a, sa), (b, sb), (c, sc), (d, sd) = (signed_in(app, project.add_annotator(directory, n)) for n in "abcd")
    assert (sa["prompt"], sb["prompt"], sc["prompt"], sd["prompt"]) == (1, 2, 1, 2)  # least-covered, counting leases
    e, se = signed_in(app, project.add_annotator(directory, "e"))
    assert se["prompt"] is None  # 2 + 2 places, all reserved
    for client, state in ((a, sa), (b, sb), (c, sc), (d, sd)):
        assert rank(client, state).status_code == 200
    assert judgements(directory) == {1: 2, 2: 2}
    assert b.post("/api/undo", headers={"X-CSRF-Token": sb["csrf"]}).json() == {"prompt_id": 2}
    assert page_state(e.get("/").text)["prompt"] is None  # item 2 lacks a judgement, but it is b's to redo
    redo = page_state(b.get("/?prompt=2").text)
    assert redo["prompt"] == 2 and rank(b, redo).status_code == 200
    assert b.post("/api/undo", headers={"X-CSRF-Token": sb["csrf"]}).json() == {"prompt_id": 2}
    expire_lease(directory, "b")
    late = page_state(b.get("/?prompt=2").text)
    assert late["prompt"] == 2 and page_state(e.get("/").text)["prompt"] is None  # b's visit renewed b's lease
    expire_lease(directory, "b")
    shown = page_state(e.get("/").text)
    assert shown["prompt"] == 2 and rank(e, shown).status_code == 200
    assert rank(b, late).status_code == 409  # the place b undid is filled: no third judgement
    assert judgements(directory) == {1: 2, 2: 2}


def test_huge_or_out_of_range_query_integers_are_4xx(setup):
    _, app, tokens = setup
    alice, _ = signed_in(app, tokens["alice"])
    for value in (str(2**70), str(2**63), "-5", "0", "2**70", "1e3", ""):
        response = alice.get("/", params={"prompt": value})
        assert response.status_code == 422, (value, response.status_code)
        assert "invalid request" in response.text and "Traceback" not in response.text
    assert alice.get("/", params={"prompt": str(2**63 - 1)}).status_code == 200  # the largest id: just not an undone item


def test_submit_refuses_unassigned_items_oversized_and_hostile_bodies(tmp_path):
    """Overlap is enforced when a ranking is stored, not only when items are handed out; every field and the
    body are bounded; hostile JSON is a 4xx for that request, never a 500."""
    directory = make_project(tmp_path, n_prompts=3, overlap=1)
    app = create_app(directory)
    (alice, state), (bob, bob_state) = (signed_in(app, project.add_annotator(directory, name)) for name in ("alice", "bob"))
    assert rank(alice, state).status_code == 200
    stolen = dict(bob_state, prompt=state["prompt"])  # bob's own CSRF token, alice's item (overlap 1: taken)
    response = rank(bob, stolen)
    assert response.status_code == 409 and "not open to you" in response.json()["error"]["message"]
    headers = {"X-CSRF-Token": bob_state["csrf"]}
    assert bob.post("/api/submit", content=b"[" * 100_000 + b"]" * 100_000, headers=headers).status_code == 413
    assert bob.post("/api/submit", content=b"[" * 5_000 + b"]" * 5_000, headers=headers).status_code == 422
    assert rank(bob, dict(bob_state, prompt=2**70)).status_code == 422
    assert rank(bob, bob_state, action="flag", reason="x" * 5_000).status_code == 422
    assert bob.post("/api/submit", content=b'{"a": "\xff"}', headers=headers).status_code == 422  # not UTF-8
    live = db(directory).execute("SELECT prompt_id, COUNT(*) AS n FROM submissions GROUP BY prompt_id").fetchall()
    assert [tuple(r) for r in live] == [(state["prompt"], 1)]


def test_candidates_are_shown_in_a_stored_order_per_annotator(tmp_path):
    """Position bias: each annotator sees each item's candidates shuffled by a seed stored with them (the same
    order on every visit, reproducible from the database), not in import order."""
    directory = make_project(tmp_path, n_prompts=1, overlap=8)  # one item: all six are shown it
    app = create_app(directory)
    tokens = [project.add_annotator(directory, f"a{i}") for i in range(6)]
    orders = []
    for token in tokens:
        client, state = signed_in(app, token)
        assert page_state(client.get("/").text)["ids"] == state["ids"]  # stable across visits
        orders.append(tuple(state["ids"]))
    assert len(set(orders)) > 1 and orders.count(tuple(sorted(orders[0]))) < len(orders)
    seeds = [r["order_seed"] for r in db(directory).execute("SELECT order_seed FROM annotators ORDER BY id")]
    assert len(set(seeds)) == len(seeds)
    conn = dbmod.connect(directory)
    assert [tuple(r["id"] for r in dbmod.item(conn, 1, i + 1)[1]) for i in range(6)] == orders


def downgrade_to_version_3(directory: Path) -> None:
    """The project as adaptlab wrote it before thumbs mode (schema version 3): no project.mode, no 'judged' status."""
    conn = db(directory)
    conn.executescript("""
        ALTER TABLE project DROP COLUMN mode;
        CREATE TABLE old (id TEXT PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id),
                          prompt_id INTEGER NOT NULL REFERENCES prompts(id),
                          status TEXT NOT NULL CHECK (status IN ('ranked', 'skipped', 'flagged')),
                          ranking TEXT, reason TEXT, created REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0);
        INSERT INTO old SELECT id, annotator_id, prompt_id, status, ranking, reason, created, undone FROM submissions;
        DROP TABLE submissions; ALTER TABLE old RENAME TO submissions;
        CREATE UNIQUE INDEX one_live_per_item ON submissions (annotator_id, prompt_id) WHERE undone = 0;
        CREATE INDEX live_by_prompt ON submissions (prompt_id) WHERE undone = 0;
        PRAGMA user_version = 3;""")
    conn.close()


def test_a_version_1_project_is_upgraded_in_place(tmp_path):
    directory = make_project(tmp_path, n_prompts=2, overlap=1)
    project.add_annotator(directory, "alice")
    downgrade_to_version_3(directory)
    conn = db(directory)
    conn.executescript("ALTER TABLE annotators DROP COLUMN order_seed; DROP TABLE leases; PRAGMA user_version = 1;")
    conn.close()
    upgraded = dbmod.connect(directory)
    assert upgraded.execute("PRAGMA user_version").fetchone()[0] == 4
    assert upgraded.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
    assert sorted(r["id"] for r in dbmod.item(upgraded, 1, 1)[1]) == [1, 2, 3, 4]
    assert dbmod.mode(upgraded) == "rank"


def test_a_version_3_project_is_a_ranking_project_after_the_upgrade(setup):
    """Projects made before thumbs mode have no mode setting: they are ranking projects, their submissions kept
    (rows, order and the one-live-per-item rule), and they still export pairs."""
    directory, app, tokens = setup
    alice, state = signed_in(app, tokens["alice"])
    assert rank(alice, state).status_code == 200
    second = page_state(alice.get("/").text)
    assert rank(alice, second, action="skip").status_code == 200
    before = [tuple(r) for r in db(directory).execute("SELECT rowid, * FROM submissions ORDER BY rowid")]
    downgrade_to_version_3(directory)
    app = create_app(directory)  # connects, so upgrades
    conn = db(directory)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4 and conn.execute("SELECT mode FROM project").fetchone()[0] == "rank"
    assert [tuple(r)[:-1] for r in conn.execute("SELECT rowid, * FROM submissions ORDER BY rowid")] == [r[:-1] for r in before]
    assert len(project.export(directory)) == 6 and project.export(directory, "pairs") == project.export(directory)
    alice, _ = signed_in(app, tokens["alice"])
    assert alice.post("/api/undo", headers={"X-CSRF-Token": page_state(alice.get("/").text)["csrf"]}).json() == {"prompt_id": second["prompt"]}
    with pytest.raises(sqlite3.IntegrityError):  # the partial unique index survived the rebuild
        conn.execute("INSERT INTO submissions (id, annotator_id, prompt_id, status, created) VALUES ('x', 1, ?, 'skipped', 0)",
                     (state["prompt"],))


def test_export_formats_feed_read_preferences(setup, tmp_path):
    directory, app, tokens = setup
    alice, state = signed_in(app, tokens["alice"])
    ids = state["ids"]
    rank(alice, state, [[ids[3]], [ids[0], ids[1]], [ids[2]]])  # a tie: 5 ordered pairs, no ranking row
    second = page_state(alice.get("/").text)
    rank(alice, second, [[i] for i in reversed(second["ids"])])  # no tie: 6 pairs and one ranking
    rank(alice, page_state(alice.get("/").text), action="skip")

    pairs, rankings = project.export(directory, "pairs"), project.export(directory, "rankings")
    assert len(pairs) == 5 + 6 and len(rankings) == 1
    texts = {r["id"]: r["text"] for r in db(directory).execute("SELECT id, text FROM candidates")}
    assert {"prompt": pairs[0]["prompt"], "chosen": texts[ids[3]], "rejected": texts[ids[0]]} in pairs
    assert not any({p["chosen"], p["rejected"]} == {texts[ids[0]], texts[ids[1]]} for p in pairs)  # tied: no pair
    assert rankings[0]["responses"] == [texts[i] for i in reversed(second["ids"])]

    runner = CliRunner()
    for fmt, expected in (("pairs", 11), ("rankings", 6)):
        out = tmp_path / f"{fmt}.jsonl"
        result = runner.invoke(feedback_app, ["export", str(directory), "-o", str(out), "--format", fmt])
        assert result.exit_code == 0, result.output
        read, detected = read_preferences(str(out))
        assert detected == fmt and len(read) == expected

    boss, _ = signed_in(app, tokens["boss"])
    download = boss.get("/admin/export?format=rankings")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert [json.loads(line) for line in download.text.splitlines()] == rankings
    assert boss.get("/admin/export?format=csv").status_code == 422
    with pytest.raises(AdaptlabError, match="--format"):
        project.export(directory, "csv")


def test_agreement_on_a_hand_made_case(tmp_path):
    directory = make_project(tmp_path, n_prompts=3, overlap=3)
    conn = db(directory)
    names = {}
    for name in ("a", "b", "c"):
        project.add_annotator(directory, name)
        names[name] = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()[0]
    # prompt 1 holds candidates 1..4, prompt 2 holds 5..8, prompt 3 holds 9..12
    rankings = [("a", 1, [[1], [2], [3], [4]]), ("b", 1, [[1], [2], [3], [4]]),  # identical: tau 1
                ("a", 2, [[5], [6], [7], [8]]), ("b", 2, [[8], [7], [6], [5]]),  # reversed: tau -1
                ("a", 3, [[9], [10], [11], [12]]), ("c", 3, [[9, 10], [11, 12]])]  # ties: tau-b = 4 / sqrt(6 * 4)
    for i, (name, prompt, ranking) in enumerate(rankings):
        conn.execute("INSERT INTO submissions (id, annotator_id, prompt_id, status, ranking, created) VALUES (?, ?, ?, 'ranked', ?, ?)",
                     (f"sub-{i}", names[name], prompt, json.dumps(ranking), i))
    conn.commit()
    result = project.agreement(conn)
    tie_tau = 4 / 24 ** 0.5
    assert result["comparisons"] == 3 and result["items"] == 3
    assert result["mean_tau"] == pytest.approx((1 - 1 + tie_tau) / 3)
    assert {tuple(p["annotators"]): round(p["tau"], 4) for p in result["pairs"]} == {("a", "b"): 0.0, ("a", "c"): round(tie_tau, 4)}


def test_admin_page_shows_progress_and_agreement(setup):
    _, app, tokens = setup
    (alice, state), (bob, bob_state) = (signed_in(app, tokens[name]) for name in ("alice", "bob"))
    for client, own in ((alice, state), (bob, dict(bob_state, prompt=state["prompt"]))):  # bob: alice's item, still open
        assert rank(client, own, [[i] for i in sorted(state["ids"])]).status_code == 200  # the same order from both
    boss, _ = signed_in(app, tokens["boss"])
    page = boss.get("/admin")
    assert page.status_code == 200
    assert re.search(r"alice</th><td>1</td><td>0</td><td>0</td><td>0</td>", page.text)
    assert '<strong id="mean-tau">1.000</strong>' in page.text and 'href="/admin/export?format=pairs"' in page.text


def test_untrusted_text_is_escaped(setup):
    _, app, tokens = setup
    alice, _ = signed_in(app, tokens["alice"])
    response = alice.get("/")
    html = response.text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in html
    assert "&lt;a href=&quot;javascript:window.__xss=1&quot;&gt;" in html
    assert "Evil &lt;b&gt;prompt&lt;/b&gt;" in html
    assert "<img" not in html and "<b>" not in html and 'href="javascript' not in html
    assert html.count("<script") == 1  # only the app's own, nonce-protected script
    csp = response.headers["content-security-policy"]
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp


def test_cli_commands(tmp_path):
    runner = CliRunner()
    candidates = write_candidates(tmp_path / "c.jsonl", 2)
    directory = tmp_path / "proj"
    result = runner.invoke(feedback_app, ["new", str(directory), "--candidates", str(candidates), "--overlap", "2"])
    assert result.exit_code == 0 and json.loads(result.output)["prompts"] == 2
    result = runner.invoke(feedback_app, ["add-annotator", str(directory), "ann", "--admin", "--base-url", "http://host:9/"])
    assert result.exit_code == 0 and re.fullmatch(r"http://host:9/login\?token=[\w-]{40,}\n", result.output)
    assert TestClient(create_app(directory)).get("/login?" + result.output.split("?")[1].strip(), follow_redirects=False).status_code == 303
    for args, message in ((["add-annotator", str(directory), "ann"], "already exists"),
                          (["new", str(directory), "--candidates", str(candidates)], "already holds"),
                          (["export", str(directory), "-o", str(tmp_path / "x.jsonl")], "no ranked submissions"),
                          (["add-annotator", str(tmp_path / "nowhere"), "x"], "not a feedback project"),
                          (["new", str(tmp_path / "p2")], "--prompts"),
                          (["serve", str(directory), "--lease-seconds", "0"], "--lease-seconds must be from 10")):
        result = runner.invoke(feedback_app, args)
        assert isinstance(result.exception, AdaptlabError) and message in str(result.exception), (args, result.exception)
    assert not (tmp_path / "x.jsonl").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "responses": ["same", "same", " "]}\n{"prompt": "q", "response": 3}\n')
    with pytest.raises(AdaptlabError, match="line 2"):
        project.new_project(tmp_path / "p3", candidates_path=bad)
    bad.write_text('{"prompt": "p", "responses": ["same", "same", " "]}\n')
    with pytest.raises(AdaptlabError, match="two distinct"):
        project.new_project(tmp_path / "p4", candidates_path=bad)


def test_new_project_samples_candidates(tmp_path, tiny_llama):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Tell me a joke."}\n{"prompt": "Name a colour."}\n', encoding="utf-8")
    result = CliRunner().invoke(feedback_app, ["new", str(tmp_path / "proj"), "--prompts", str(prompts), "--model", str(tiny_llama),
                                               "-n", "3", "--max-new-tokens", "6", "--temperature", "1.5"])
    assert result.exit_code == 0, result.output
    conn = db(tmp_path / "proj")
    rows = conn.execute("SELECT prompt_id, text, source FROM candidates").fetchall()
    assert {r["prompt_id"] for r in rows} == {1, 2} and all(r["source"] == str(tiny_llama) for r in rows)
    assert all(2 <= n <= 3 for (n,) in conn.execute("SELECT COUNT(*) FROM candidates GROUP BY prompt_id"))


def test_concurrent_annotators_lose_and_duplicate_nothing(tmp_path):
    """50 annotators x 20 submissions at once, each also trying once to rank an item that already has its 50
    annotators (prompt 21, filled beforehand): 1,000 stored, the 50 attempts refused, no item over the overlap."""
    directory = make_project(tmp_path, n_prompts=21, overlap=50)
    conn = dbmod.connect(directory)
    full_ids = [[c["id"]] for c in dbmod.item(conn, 21)[1]]
    for i in range(50):  # prompt 21 gets its 50 annotators before the test's annotators arrive
        project.add_annotator(directory, f"earlier-{i:02d}")
        earlier = conn.execute("SELECT id FROM annotators WHERE name = ?", (f"earlier-{i:02d}",)).fetchone()["id"]
        assert dbmod.submit(conn, earlier, uuid.uuid4().hex, 21, "ranked", full_ids, None)
    tokens = [project.add_annotator(directory, f"annotator-{i:02d}") for i in range(50)]

    def annotate(index: int, base: str) -> tuple[int, int]:
        refused = 0
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.get(f"/login?token={tokens[index]}").status_code == 303
            for step in range(20):
                state = page_state(client.get("/").text)
                assert state["prompt"] != 21
                ranking = [[i] for i in state["ids"][step % 4:] + state["ids"][:step % 4]]
                body = {"submission_id": state["submission"], "prompt_id": state["prompt"], "action": "rank", "ranking": ranking}
                headers = {"X-CSRF-Token": state["csrf"]}
                if step == index % 20:  # an item never handed to this annotator, with their own valid CSRF token
                    unassigned = {**body, "submission_id": uuid.uuid4().hex, "prompt_id": 21, "ranking": full_ids}
                    refused += client.post("/api/submit", json=unassigned, headers=headers).status_code == 409
                assert client.post("/api/submit", json=body, headers=headers).json()["stored"] is True
                if step % 7 == index % 7:  # a client retrying after a lost response
                    assert client.post("/api/submit", json=body, headers=headers).json()["stored"] is False
            assert "All done" in client.get("/").text
        return 20, refused

    with serve_in_background(directory) as base, ThreadPoolExecutor(50) as pool:
        done = list(pool.map(annotate, range(50), [base] * 50))
    assert sum(stored for stored, _ in done) == 1000 and sum(refused for _, refused in done) == 50
    conn = db(directory)
    assert conn.execute("SELECT COUNT(*) FROM submissions WHERE prompt_id != 21").fetchone()[0] == 1000
    assert conn.execute("SELECT COUNT(DISTINCT annotator_id || '/' || prompt_id) FROM submissions").fetchone()[0] == 1050
    assert [n for (n,) in conn.execute("SELECT COUNT(*) FROM submissions GROUP BY prompt_id")] == [50] * 21


def test_annotators_at_once_are_not_refused_the_items_they_are_shown(tmp_path):
    """Issue 47, small: 10 annotators at once over real HTTP, each looping (next item, submit) until nothing is left
    for them. Before reservations they were all shown the same item and most submissions were refused (409)."""
    directory = make_project(tmp_path, n_prompts=30, overlap=3)
    tokens = [project.add_annotator(directory, f"annotator-{i}") for i in range(10)]

    def annotate(token: str, base: str) -> tuple[list[str], int]:
        stored, refused = [], 0
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.get(f"/login?token={token}").status_code == 303
            for _ in range(60):  # at most 30 items each; the bound only stops a broken server looping forever
                state = page_state(client.get("/").text)
                if state["prompt"] is None:
                    break
                body = {"submission_id": state["submission"], "prompt_id": state["prompt"], "action": "rank",
                        "ranking": [[i] for i in state["ids"]]}
                response = client.post("/api/submit", json=body, headers={"X-CSRF-Token": state["csrf"]})
                assert response.status_code in (200, 409), response.text
                if response.status_code == 200:
                    stored.append(state["submission"])
                refused += response.status_code == 409
        return stored, refused

    with serve_in_background(directory) as base, ThreadPoolExecutor(10) as pool:
        done = list(pool.map(annotate, tokens, [base] * 10))
    assert sum(refused for _, refused in done) == 0
    stored = {sid for ids, _ in done for sid in ids}
    rows = {r["id"] for r in db(directory).execute("SELECT id FROM submissions WHERE undone = 0")}
    assert len(stored) == 90 and rows == stored  # none lost, none extra
    assert judgements(directory) == {i: 3 for i in range(1, 31)}
    assert db(directory).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # each lease became a submission


def test_browser_ranks_with_mouse_and_keyboard(tmp_path, chromium):
    from playwright import sync_api  # a dev dependency: missing means a broken install, not a skip

    directory = make_project(tmp_path, n_prompts=2, overlap=1, evil=True)
    link = project.add_annotator(directory, "alice")
    artifacts = Path(os.environ.get("ADAPTLAB_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    order = lambda page: [int(i) for i in page.eval_on_selector_all("#ranking li", "els => els.map(e => e.dataset.id)")]
    alice = db(directory).execute("SELECT id FROM annotators WHERE name = 'alice'").fetchone()["id"]
    shown = lambda prompt: [row["id"] for row in dbmod.item(db(directory), prompt, alice)[1]]  # her shuffled order
    a, b, c, d = shown(1)

    with serve_in_background(directory) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/login?token={link}")
        assert page.url == f"{base}/" and order(page) == [a, b, c, d] and sorted(order(page)) == [1, 2, 3, 4]
        assert page.locator("#ranking").inner_text().count("<script>window.__xss=1</script>") == 1
        assert page.locator("#ranking img, #ranking a, #ranking script").count() == 0
        assert "<img src=x onerror=" in page.locator("#ranking").inner_text()

        page.drag_and_drop(f"#ranking li[data-id='{d}']", f"#ranking li[data-id='{a}']")
        assert order(page) == [d, a, b, c]
        page.focus(f"#ranking li[data-id='{b}']")
        page.keyboard.press("Alt+ArrowUp")
        page.keyboard.press("Alt+ArrowUp")
        assert order(page) == [b, d, a, c]
        page.keyboard.press("Alt+ArrowDown")
        assert order(page) == [d, b, a, c]
        assert page.evaluate("document.activeElement.dataset.id") == str(b)
        page.get_by_label("Rank 4 of 4").get_by_label("Tie with the one above").check()
        page.screenshot(path=str(artifacts / "feedback-ranking.png"), full_page=True)

        with page.expect_navigation():
            page.get_by_role("button", name="Submit ranking").click()
        conn = db(directory)
        row = conn.execute("SELECT prompt_id, status, ranking, undone FROM submissions").fetchone()
        assert (row["prompt_id"], row["status"], json.loads(row["ranking"]), row["undone"]) == (1, "ranked", [[d], [b], [a, c]], 0)
        assert "1 of 2 done" in page.content() and order(page) == shown(2)

        with page.expect_navigation():
            page.get_by_role("button", name="Undo last submission").click()
        assert conn.execute("SELECT undone FROM submissions").fetchone()[0] == 1
        assert order(page) == [a, b, c, d] and "0 of 2 done" in page.content()
        assert page.evaluate("typeof window.__xss") == "undefined"
        browser.close()
    assert (artifacts / "feedback-ranking.png").stat().st_size > 10_000


def test_ranked_project_trains_a_reward_model_directly(tmp_path, tiny_bert, cli):
    """The whole loop without the browser: new project -> rank -> `adaptlab rlhf reward --data PROJECT`."""
    directory = make_project(tmp_path, n_prompts=8, overlap=1)
    token = project.add_annotator(directory, "alice")
    client, state = signed_in(create_app(directory), token)
    while state["prompt"] is not None:
        assert rank(client, state).status_code == 200
        state = page_state(client.get("/").text)
    code, _, err = cli("rlhf", "reward", "--data", directory, "-o", tmp_path / "rm", "--model", tiny_bert, "--epochs", "1", "--json")
    assert code == 0, err
    manifest = json.loads((tmp_path / "rm" / "manifest.json").read_text())
    assert sum(manifest["data"]["pairs"].values()) == 8 * 6 and sum(manifest["data"]["prompts"].values()) == 8


# --- thumbs mode: each candidate gets a thumbs up or down; the export is KTO rows -----------------------------------


@pytest.fixture
def thumbs_setup(tmp_path):
    (tmp_path / "thumbs").mkdir()
    directory = make_project(tmp_path / "thumbs", evil=True, mode="thumbs")
    tokens = {name: project.add_annotator(directory, name, admin=name == "boss") for name in ("alice", "bob", "carol", "boss")}
    return directory, create_app(directory), tokens


def test_thumbs_submit_retry_conflict_validation_and_undo(thumbs_setup, setup):
    """The same submission machinery as ranking: idempotent on the submission id, one live submission per item,
    undo reserves the item for a redo; thumbs must judge every candidate exactly once."""
    directory, app, tokens = thumbs_setup
    alice, state = signed_in(app, tokens["alice"])
    bob, bob_state = signed_in(app, tokens["bob"])
    page = alice.get("/").text
    assert 'id="thumbs"' in page and 'id="ranking"' not in page and "Judge the responses" in page
    assert page.count('aria-label="Thumbs up"') == page.count('aria-label="Thumbs down"') == 4
    assert state["prompt"] != bob_state["prompt"]  # leases work as for ranking
    ids = state["ids"]
    for thumbs in ({"up": ids[:2], "down": ids[2:3]}, {"up": ids, "down": ids[:1]}, {"up": ids[:3], "down": [999]},
                   "nope", {"up": ids}, {"up": [str(i) for i in ids], "down": []}, {"up": ids, "down": [], "maybe": []}, []):
        assert judge(alice, state, thumbs=thumbs).status_code == 422, thumbs
    no_thumbs = {"submission_id": state["submission"], "prompt_id": state["prompt"], "action": "judge"}
    assert alice.post("/api/submit", json=no_thumbs, headers={"X-CSRF-Token": state["csrf"]}).status_code == 422
    assert rank(alice, state).status_code == 422  # a ranking in a thumbs project
    _, rank_app, rank_tokens = setup
    rank_client, rank_state = signed_in(rank_app, rank_tokens["alice"])
    refused = judge(rank_client, rank_state)
    assert refused.status_code == 422 and "rank project" in refused.json()["error"]["message"]  # thumbs in a ranking project

    first = judge(alice, state, up={ids[3], ids[0]})
    assert first.status_code == 200 and first.json()["stored"] is True
    retry = judge(alice, state, up={ids[3], ids[0]})
    assert retry.status_code == 200 and retry.json()["stored"] is False
    assert judge(bob, bob_state, sid=state["submission"]).status_code == 409  # another annotator reuses the id
    assert judge(alice, state, sid="another-id-1234").status_code == 409  # same item twice
    rows = db(directory).execute("SELECT * FROM submissions").fetchall()
    assert len(rows) == 1 and rows[0]["status"] == "judged" and rows[0]["ranking"] is None
    assert json.loads(rows[0]["thumbs"]) == {"up": sorted([ids[0], ids[3]]), "down": sorted([ids[1], ids[2]])}
    assert db(directory).execute("SELECT COUNT(*) FROM leases WHERE annotator_id = 1").fetchone()[0] == 0  # lease -> submission

    nxt = page_state(alice.get("/").text)
    assert nxt["prompt"] != state["prompt"]
    assert alice.post("/api/undo", headers={"X-CSRF-Token": state["csrf"]}).json() == {"prompt_id": state["prompt"]}
    assert project.export(directory) == []  # the undone judgement is not exported
    again = page_state(alice.get(f"/?prompt={state['prompt']}").text)
    assert again["prompt"] == state["prompt"] and again["submission"] != state["submission"]
    assert judge(alice, again, up=set(ids)).json()["stored"] is True  # a redo: all up this time
    assert [row["label"] for row in project.export(directory)] == [True] * 4
    assert judge(bob, bob_state, thumbs=None, up=set()).json()["stored"] is True
    skipped = page_state(bob.get("/").text)
    assert rank(bob, skipped, action="skip").status_code == 200  # skip and flag work as in ranking mode
    assert rank(alice, page_state(alice.get("/").text), action="flag", reason="off topic").status_code == 200
    statuses = [r[0] for r in db(directory).execute("SELECT status FROM submissions WHERE undone = 0 ORDER BY rowid")]
    assert statuses == ["judged", "judged", "skipped", "flagged"]


def test_thumbs_export_rows_cli_admin_and_refusals(thumbs_setup, tmp_path, cli):
    """One KTO row per judged candidate per annotator (two annotators who judged the same candidate give two rows);
    read back by `rlhf kto`'s reader; the wrong format for a project's mode is one line, exit 2."""
    from adaptlab.rlhf.kto import read_thumbs

    directory, app, tokens = thumbs_setup
    alice, state = signed_in(app, tokens["alice"])
    bob, _ = signed_in(app, tokens["bob"])
    bob_state = dict(page_state(bob.get("/").text), prompt=state["prompt"], ids=state["ids"])  # alice's item, still open
    ids = state["ids"]
    assert judge(alice, state, up={ids[0]}).status_code == 200
    assert judge(bob, bob_state, up={ids[0], ids[1]}).status_code == 200
    texts = {r["id"]: r["text"] for r in db(directory).execute("SELECT id, text FROM candidates")}
    prompt = db(directory).execute("SELECT text FROM prompts WHERE id = ?", (state["prompt"],)).fetchone()[0]
    rows = project.export(directory)
    assert rows == project.export(directory, "kto") and len(rows) == 8
    by_annotator = rows[:4], rows[4:]
    assert all(row["prompt"] == prompt and set(row) == {"prompt", "completion", "label"} for row in rows)
    assert {r["completion"]: r["label"] for r in by_annotator[0]} == {texts[i]: i == ids[0] for i in ids}
    assert {r["completion"]: r["label"] for r in by_annotator[1]} == {texts[i]: i in (ids[0], ids[1]) for i in ids}

    out = tmp_path / "kto.jsonl"
    code, stdout, err = cli("feedback", "export", directory, "-o", out)  # a thumbs project's default: kto
    assert code == 0, err
    assert json.loads(stdout) == {"output": str(out), "format": "kto", "rows": 8}
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    thumbs = read_thumbs(str(out))
    assert len(thumbs) == 8 and sum(t.label for t in thumbs) == 3 and {t.prompt for t in thumbs} == {prompt}
    code, _, err = cli("feedback", "export", directory, "-o", tmp_path / "p.jsonl", "--format", "pairs")
    assert code == 2 and "--format kto" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "p.jsonl").exists()

    rank_dir = tmp_path / "ranked"
    project.new_project(rank_dir, candidates_path=write_candidates(tmp_path / "r.jsonl", 2))
    code, _, err = cli("feedback", "export", rank_dir, "-o", tmp_path / "r.jsonl.out", "--format", "kto")
    assert code == 2 and "--format pairs" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty-thumbs"
    project.new_project(empty, candidates_path=write_candidates(tmp_path / "e.jsonl", 2), mode="thumbs")
    code, _, err = cli("feedback", "export", empty, "-o", tmp_path / "e.out")
    assert code == 2 and "no judged submissions" in err

    boss, _ = signed_in(app, tokens["boss"])
    page = boss.get("/admin").text
    assert 'href="/admin/export?format=kto"' in page and "format=pairs" not in page and "format=rankings" not in page
    assert re.search(r"alice</th><td>1</td><td>0</td><td>0</td><td>0</td>", page) and '<th scope="col">Judged</th>' in page
    assert '<strong id="thumbs-agreement">0.750</strong> over 4 comparisons on 4 responses' in page  # 3 of 4 the same
    download = boss.get("/admin/export?format=kto")
    assert download.status_code == 200 and 'filename="feedback-kto.jsonl"' in download.headers["content-disposition"]
    assert [json.loads(line) for line in download.text.splitlines()] == rows
    assert boss.get("/admin/export").text == download.text  # no format: the project's own
    refused = boss.get("/admin/export?format=pairs")
    assert refused.status_code == 422 and "--format kto" in refused.text


def test_thumbs_project_cli_and_single_candidates(tmp_path):
    runner = CliRunner()
    rows = [{"prompt": "one answer only", "responses": ["just this"]}, {"prompt": "two", "responses": ["a", "b"]}]
    candidates = tmp_path / "c.jsonl"
    candidates.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = runner.invoke(feedback_app, ["new", str(tmp_path / "t"), "--candidates", str(candidates), "--mode", "thumbs"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) | {"project": None} == {"project": None, "prompts": 2, "skipped_prompts": 0, "candidates": 3,
                                                              "overlap": 1, "mode": "thumbs"}  # one candidate can be judged
    assert db(tmp_path / "t").execute("SELECT mode FROM project").fetchone()[0] == "thumbs"
    result = runner.invoke(feedback_app, ["new", str(tmp_path / "r"), "--candidates", str(candidates)])
    assert result.exit_code == 0 and json.loads(result.output)["mode"] == "rank" and json.loads(result.output)["prompts"] == 1
    result = runner.invoke(feedback_app, ["new", str(tmp_path / "x"), "--candidates", str(candidates), "--mode", "stars"])
    assert isinstance(result.exception, AdaptlabError) and "--mode must be one of rank, thumbs" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_untrusted_text_is_escaped_in_thumbs_mode(thumbs_setup):
    _, app, tokens = thumbs_setup
    alice, _ = signed_in(app, tokens["alice"])
    response = alice.get("/")
    html = response.text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html and "Evil &lt;b&gt;prompt&lt;/b&gt;" in html
    assert "<img" not in html and "<b>" not in html and 'href="javascript' not in html and html.count("<script") == 1
    assert "unsafe-inline" not in response.headers["content-security-policy"]


def test_thumbs_export_trains_kto(tmp_path, tiny_llama, cli):
    """The thumbs loop without the browser: new --mode thumbs -> judge -> export -> `adaptlab rlhf kto --data EXPORT`."""
    directory = make_project(tmp_path, n_prompts=8, overlap=1, mode="thumbs")
    client, state = signed_in(create_app(directory), project.add_annotator(directory, "alice"))
    while state["prompt"] is not None:
        assert judge(client, state).status_code == 200  # two up, two down per item
        state = page_state(client.get("/").text)
    exported = tmp_path / "thumbs.jsonl"
    code, _, err = cli("feedback", "export", directory, "-o", exported, "--format", "kto")
    assert code == 0, err
    code, _, err = cli("rlhf", "kto", "--data", exported, "--model", tiny_llama, "--epochs", "1", "--max-length", "64",
                       "-o", tmp_path / "kto")
    assert code == 0, err
    data = json.loads((tmp_path / "kto" / "manifest.json").read_text())["data"]
    assert sum(data["rows"].values()) == 8 * 4 and sum(data["thumbs_up"].values()) == 8 * 2
    assert sum(data["prompts"].values()) == 8
    from adaptlab.rlhf.kto import read_thumbs  # the project directory itself is KTO data too

    assert [(t.prompt, t.completion, t.label) for t in read_thumbs(str(directory))] == \
        [(r["prompt"], r["completion"], r["label"]) for r in map(json.loads, exported.read_text().splitlines())]


def test_browser_judges_with_mouse_and_keyboard(tmp_path, chromium):
    """Thumbs mode in a real Chromium: buttons and U/D keys, a refused incomplete submission, submit, undo."""
    from playwright import sync_api

    directory = make_project(tmp_path, n_prompts=2, overlap=1, evil=True, mode="thumbs")
    link = project.add_annotator(directory, "alice")
    artifacts = Path(os.environ.get("ADAPTLAB_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    order = lambda page: [int(i) for i in page.eval_on_selector_all("#thumbs li", "els => els.map(e => e.dataset.id)")]
    alice = db(directory).execute("SELECT id FROM annotators WHERE name = 'alice'").fetchone()["id"]
    shown = lambda prompt: [row["id"] for row in dbmod.item(db(directory), prompt, alice)[1]]
    a, b, c, d = shown(1)

    with serve_in_background(directory) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/login?token={link}")
        assert page.url == f"{base}/" and order(page) == [a, b, c, d]
        assert page.locator("#thumbs").inner_text().count("<script>window.__xss=1</script>") == 1
        assert page.locator("#thumbs img, #thumbs a, #thumbs script").count() == 0
        response = lambda i: page.get_by_label(f"Response {i} of 4", exact=True)
        pressed = lambda i, name: response(i).get_by_role("button", name=name).get_attribute("aria-pressed")

        response(1).get_by_role("button", name="Thumbs down").click()
        response(1).get_by_role("button", name="Thumbs up").click()  # changed their mind
        assert (pressed(1, "Thumbs up"), pressed(1, "Thumbs down")) == ("true", "false")
        page.focus(f"#thumbs li[data-id='{b}']")
        page.keyboard.press("d")  # judged, and focus moves on to the next response
        assert page.evaluate("document.activeElement.dataset.id") == str(c)
        page.keyboard.press("u")
        assert (pressed(2, "Thumbs down"), pressed(3, "Thumbs up")) == ("true", "true")
        assert page.evaluate("document.activeElement.dataset.id") == str(d)
        page.get_by_role("button", name="Submit judgements").click()  # response 4 not judged yet: refused here
        assert "every response" in page.locator("#message").inner_text()
        assert page.evaluate("document.activeElement.dataset.id") == str(d)
        assert db(directory).execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0
        page.keyboard.press("ArrowUp")
        assert page.evaluate("document.activeElement.dataset.id") == str(c)
        page.keyboard.press("ArrowDown")
        page.keyboard.press("-")
        page.screenshot(path=str(artifacts / "feedback-thumbs.png"), full_page=True)

        with page.expect_navigation():
            page.get_by_role("button", name="Submit judgements").click()
        conn = db(directory)
        row = conn.execute("SELECT prompt_id, status, thumbs, undone FROM submissions").fetchone()
        assert (row["prompt_id"], row["status"], row["undone"]) == (1, "judged", 0)
        assert json.loads(row["thumbs"]) == {"up": sorted([a, c]), "down": sorted([b, d])}
        assert "1 of 2 done" in page.content() and order(page) == shown(2)
        assert pressed(1, "Thumbs up") == "false"  # a fresh item starts unjudged

        with page.expect_navigation():
            page.get_by_role("button", name="Undo last submission").click()
        assert conn.execute("SELECT undone FROM submissions").fetchone()[0] == 1
        assert order(page) == [a, b, c, d] and "0 of 2 done" in page.content()
        assert page.evaluate("typeof window.__xss") == "undefined"
        browser.close()
    assert (artifacts / "feedback-thumbs.png").stat().st_size > 10_000
