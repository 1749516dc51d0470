"""The board's one page: plain HTML, CSS and JavaScript (no build step, nothing fetched from elsewhere).

The script polls /api/summary; the finished-cell count (#finished) updates every poll, the
leaderboard and plots are redrawn only when the set of finished cells changes (`version`). Text
from the sweep is inserted as text (textContent), never as HTML.
"""

from __future__ import annotations

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; border-bottom: 1px solid #ddd; }
.status { font-size: 1.05rem; } .status b { font-size: 1.3rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } td.best { font-weight: bold; background: #e6f4ea; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3rem 0; }
pre { background: #f6f8fa; padding: 0.6rem; overflow: auto; max-height: 24rem; font-size: 0.8rem; }
.finished { color: #1a7f37; } .failed { color: #cf222e; } .pending { color: #888; }
textarea { width: 100%; max-width: 40rem; } .error { color: #cf222e; }
"""

SCRIPT = """
const POLL_MS = %(poll_ms)d;
let version = null, selected = null;
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }

async function poll() {
  try {
    const s = await (await fetch('/api/summary')).json();
    $('name').textContent = s.name;
    $('finished').textContent = s.finished;
    $('planned').textContent = s.planned;
    $('failed').textContent = s.failed;
    $('pending').textContent = s.pending;
    $('updated').textContent = new Date().toLocaleTimeString();
    if (s.version !== version) { version = s.version; redraw(s); }
    if (selected && s.cells.some(c => c.id === selected && c.state === 'pending')) showLog(selected);
  } catch (err) { $('updated').textContent = 'board unreachable (' + err + ')'; }
  setTimeout(poll, POLL_MS);
}

function redraw(s) {
  const t = $('leaderboard'); t.replaceChildren();
  const head = el('tr'); s.leaderboard.headers.forEach(h => head.appendChild(el('th', h)));
  t.appendChild(el('thead')).appendChild(head);
  const body = t.appendChild(el('tbody'));
  s.leaderboard.rows.forEach((row, i) => {
    const tr = body.appendChild(el('tr'));
    row.forEach((c, j) => tr.appendChild(el('td', c, s.leaderboard.best[i].includes(j) && c !== '–' ? 'best' : '')));
  });
  const plots = $('plots'); plots.replaceChildren();
  s.plots.forEach(name => { const img = el('img'); img.alt = name; img.src = '/api/plots/' + name + '?v=' + s.version; plots.appendChild(img); });
  if (!s.plots.length) plots.appendChild(el('p', 'Plots appear once a cell has finished.'));
  const cells = $('cells'); cells.replaceChildren();
  const choice = $('cell'); const kept = choice.value; choice.replaceChildren();
  s.cells.forEach(c => {
    const li = cells.appendChild(el('li'));
    li.appendChild(el('span', c.state + ' ', c.state));
    const a = li.appendChild(el('a', c.id)); a.href = '#detail'; a.onclick = () => select(c);
    if (c.state === 'finished') ['config.yaml', 'metrics.json', 'predictions.jsonl'].forEach(f => {
      li.appendChild(document.createTextNode(' · '));
      const link = li.appendChild(el('a', f)); link.href = '/api/cells/' + encodeURIComponent(c.id) + '/files/' + f;
    });
    if (c.state === 'finished') {
      const o = choice.appendChild(el('option', c.id + (c.artifact ? '' : ' (no weights kept)'))); o.value = c.id;
    }
  });
  if (kept) choice.value = kept;
}

async function showLog(id) {
  $('log').textContent = await (await fetch('/api/cells/' + encodeURIComponent(id) + '/log')).text() || '(no output yet)';
}

function select(c) {
  selected = c.id; $('detail-title').textContent = c.id + ' (' + c.state + ')';
  showLog(c.id);
  const img = $('curves');
  if (c.state === 'finished') { img.hidden = false; img.src = '/api/cells/' + encodeURIComponent(c.id) + '/curves.png'; }
  else img.hidden = true;
}

async function predict(event) {
  event.preventDefault();
  $('answer').textContent = 'loading the model…'; $('answer').className = '';
  const r = await fetch('/api/predict', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                         body: JSON.stringify({cell: $('cell').value, text: $('text').value})});
  const out = await r.json();
  if (!r.ok) { $('answer').textContent = out.error; $('answer').className = 'error'; return; }
  $('answer').textContent = 'prediction: ' + out.prediction + (out.probabilities ? '   ' + JSON.stringify(out.probabilities) : '');
}

$('playground').onsubmit = predict;
poll();
"""

BODY = """
<h1>tunelab board: <span id="name">…</span></h1>
<p class="status">finished <b id="finished">…</b> of <span id="planned">…</span> cells ·
failed <span id="failed">…</span> · to run <span id="pending">…</span> · updated <span id="updated">–</span></p>
<h2>Leaderboard</h2><div class="scroll"><table id="leaderboard"></table></div>
<h2>Plots</h2><div id="plots"></div>
<h2>Cells</h2><ul id="cells"></ul>
<h2 id="detail">Cell: <span id="detail-title">choose one above</span></h2>
<img id="curves" alt="learning curves" hidden><pre id="log"></pre>
<h2>Playground</h2>
<form id="playground"><p><select id="cell"></select></p>
<p><textarea id="text" rows="2" placeholder="type a sentence"></textarea></p>
<p><button type="submit">predict</button> <span id="answer"></span></p></form>
"""


def page(poll_seconds: float) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><title>tunelab board</title><style>{STYLE}</style></head><body>{BODY}'
            f"<script>{SCRIPT % {'poll_ms': int(poll_seconds * 1000)}}</script></body></html>")
