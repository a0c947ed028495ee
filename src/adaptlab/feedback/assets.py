"""The ranking app's stylesheet and script, served inline with a per-request nonce (``adaptlab.feedback.app``): kept
apart so the app's module holds its routes, not a page of CSS and JavaScript."""

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 62rem; margin: 1rem auto; padding: 0 1rem; color: #1a1a1a; }
header { display: flex; justify-content: space-between; align-items: center; gap: 1rem; flex-wrap: wrap; }
.prompt, .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.prompt { background: #f3f4f6; padding: .75rem; border-radius: .4rem; }
ol#ranking, ol#thumbs { list-style: none; padding: 0; }
ol#ranking li, ol#thumbs li { display: grid; grid-template-columns: 2.5rem 1fr auto; gap: .75rem; align-items: start;
  border: 1px solid #9ca3af; border-radius: .4rem; padding: .6rem; margin: .4rem 0; background: #fff; }
ol#ranking li { cursor: grab; }
ol#ranking li:focus, ol#thumbs li:focus { outline: 3px solid #2563eb; outline-offset: 2px; }
ol#ranking li.tied { border-left: 6px solid #d97706; }
ol#thumbs li.up { border-left: 6px solid #15803d; }
ol#thumbs li.down { border-left: 6px solid #b91c1c; }
button[aria-pressed="true"] { font-weight: 700; background: #dbeafe; border-color: #2563eb; }
.rank { font-weight: 700; font-size: 1.2rem; }
.controls { display: flex; flex-direction: column; gap: .25rem; font-size: .9rem; }
.actions { display: flex; gap: .5rem; flex-wrap: wrap; align-items: end; margin-top: 1rem; }
button { font: inherit; padding: .35rem .8rem; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
#message { min-height: 1.5rem; color: #b91c1c; }
table { border-collapse: collapse; } td, th { border: 1px solid #9ca3af; padding: .25rem .6rem; text-align: right; }
"""

# Ranking: reorders the list (HTML5 drag and drop, Alt+ArrowUp/Down, move buttons), reads ties. Thumbs: a thumbs up
# or down per response (its buttons, or U/D on the focused response). Both post JSON to the same endpoint.
SCRIPT = """
const list = document.getElementById('ranking');
const thumbs = document.getElementById('thumbs');
const main = document.querySelector('main');
const csrf = document.querySelector('meta[name=csrf-token]').content;
const say = (text) => { document.getElementById('message').textContent = text; };
function renumber() {
  const items = [...list.children];
  items.forEach((li, i) => {
    li.querySelector('.rank').textContent = i + 1;
    li.setAttribute('aria-label', 'Rank ' + (i + 1) + ' of ' + items.length);
    const tie = li.querySelector('input.tie');
    tie.disabled = i === 0; if (i === 0) tie.checked = false;
    li.classList.toggle('tied', tie.checked);
  });
}
function move(li, delta) {
  const target = delta < 0 ? li.previousElementSibling : li.nextElementSibling;
  if (!target) return;
  list.insertBefore(li, delta < 0 ? target : target.nextElementSibling);
  renumber(); li.focus();
  document.getElementById('status').textContent = 'Moved to rank ' + ([...list.children].indexOf(li) + 1);
}
function ranking() {
  const groups = [];
  for (const li of list.children) {
    const id = Number(li.dataset.id);
    if (li.querySelector('input.tie').checked && groups.length) groups[groups.length - 1].push(id); else groups.push([id]);
  }
  return groups;
}
async function post(url, body) {
  for (let attempt = 0; ; attempt++) {  // a lost response is retried with the same submission id
    try {
      const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
                                  body: JSON.stringify(body || {}), credentials: 'same-origin'});
      const data = await r.json().catch(() => ({}));
      if (!r.ok) { say(data.error ? data.error.message : 'Error ' + r.status); return null; }
      return data;
    } catch (e) { if (attempt >= 2) { say('Network error; please try again.'); return null; } }
  }
}
function judge(li, up) {
  li.dataset.thumb = up ? 'up' : 'down';
  li.querySelector('.thumb-up').setAttribute('aria-pressed', String(up));
  li.querySelector('.thumb-down').setAttribute('aria-pressed', String(!up));
  li.classList.toggle('up', up); li.classList.toggle('down', !up);
  document.getElementById('status').textContent = li.getAttribute('aria-label') + ': thumbs ' + (up ? 'up' : 'down');
  if (judgements()) say('');
}
function judgements() {
  const result = {up: [], down: []};
  for (const li of thumbs.children) {
    if (!li.dataset.thumb) return null;
    result[li.dataset.thumb].push(Number(li.dataset.id));
  }
  return result;
}
async function send(action) {
  const reason = document.getElementById('reason');
  if (action === 'flag' && !reason.value.trim()) { say('Please give a reason for the flag.'); reason.focus(); return; }
  const judged = action === 'judge' ? judgements() : null;
  if (action === 'judge' && !judged) {
    say('Give every response a thumbs up or down first.');
    [...thumbs.children].find((li) => !li.dataset.thumb).focus();
    return;
  }
  const data = await post('/api/submit', {submission_id: main.dataset.submission, prompt_id: Number(main.dataset.prompt),
                                          action: action, ranking: action === 'rank' ? ranking() : null, thumbs: judged,
                                          reason: reason.value});
  if (data) location.assign('/');
}
async function undo() {
  const data = await post('/api/undo');
  if (data && data.prompt_id !== null) location.assign('/?prompt=' + data.prompt_id);
  else if (data) say('Nothing to undo.');
}
if (list) {
  let dragged = null;
  for (const li of list.children) {
    li.addEventListener('dragstart', (e) => { dragged = li; e.dataTransfer.effectAllowed = 'move'; e.dataTransfer.setData('text/plain', li.dataset.id); });
    li.addEventListener('dragover', (e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'move'; });
    li.addEventListener('drop', (e) => {
      e.preventDefault();
      if (!dragged || dragged === li) return;
      const items = [...list.children];
      list.insertBefore(dragged, items.indexOf(dragged) < items.indexOf(li) ? li.nextElementSibling : li);
      renumber(); dragged.focus(); dragged = null;
    });
    li.addEventListener('keydown', (e) => {
      if (e.target === li && e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) { e.preventDefault(); move(li, e.key === 'ArrowUp' ? -1 : 1); }
    });
    li.querySelector('.up').addEventListener('click', () => move(li, -1));
    li.querySelector('.down').addEventListener('click', () => move(li, 1));
    li.querySelector('input.tie').addEventListener('change', renumber);
  }
  renumber();
}
if (thumbs) {
  for (const li of thumbs.children) {
    li.querySelector('.thumb-up').addEventListener('click', () => judge(li, true));
    li.querySelector('.thumb-down').addEventListener('click', () => judge(li, false));
    li.addEventListener('keydown', (e) => {
      if (e.target !== li || e.altKey || e.ctrlKey || e.metaKey) return;
      const key = e.key.toLowerCase();
      if (key === 'u' || key === 'd' || key === '+' || key === '-') {  // judge, then on to the next response
        e.preventDefault(); judge(li, key === 'u' || key === '+');
        if (li.nextElementSibling) li.nextElementSibling.focus();
      } else if ((e.key === 'ArrowDown' && li.nextElementSibling) || (e.key === 'ArrowUp' && li.previousElementSibling)) {
        e.preventDefault(); (e.key === 'ArrowDown' ? li.nextElementSibling : li.previousElementSibling).focus();
      }
    });
  }
}
for (const action of ['rank', 'judge', 'skip', 'flag']) {
  const button = document.getElementById(action);
  if (button) button.addEventListener('click', () => send(action));
}
document.getElementById('undo').addEventListener('click', undo);
"""
