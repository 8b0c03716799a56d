// The job page's log: reads the log's server-sent events, renders ANSI with ansi_up (which
// escapes the text), turns travis_fold / travis_time markers into collapsible sections with their
// durations, numbers the lines with anchors, and follows the end while the job runs.
//
// A big log must not freeze the tab: the work is done in slices of at most SLICE_MS, each
// followed by a yield; lines go in blocks of BLOCK lines, and past the first EAGER_BLOCKS a
// block's HTML is kept as a string (with its estimated height) until it nears the viewport, a
// line anchor asks for it, or the tab is idle once the log has ended: the browser then parses
// what is seen first, not 4 MiB before the first paint. Blocks on screen are still skipped by
// layout while off screen (content-visibility).
import { AnsiUp } from './ansi_up.js';

const BLOCK = 256;
const EAGER_BLOCKS = 16;
/** Estimated height of a line (13px at line-height 1.45), for a block not yet parsed. */
const LINE_PX = 18.85;
const SLICE_MS = 25;
// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escapes are what is stripped
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?/g;
const FOLD = /^travis_fold:(start|end):(\S+)/;
const TIME_END = /^travis_time:end:[^:]*:.*duration=(\d+)/;
const TIME_START = /^travis_time:start:/;
// Travis's (and archway's) words for a failed command: the section they are in, or that they end,
// opens. `The command "<anything>" exited with N.`: found in one pass (says below), since a regex
// with `.*` between the two took time quadratic in a line that repeats its start, and a job could
// print such a line to freeze the page of whoever reads its log.
const COMMAND = 'The command "';
const FAILED_IN = /" exited with [1-9]\d*\./g;
const FAILED_AFTER = /" failed and exited with [1-9]\d*/g;
function says(plain, end) {
  const at = plain.indexOf(COMMAND);
  if (at < 0) return false;
  end.lastIndex = at + COMMAND.length;
  return end.test(plain);
}

const root = document.getElementById('log');
const endNote = document.getElementById('log-end');
const followButton = document.getElementById('follow');
const stateBadge = document.getElementById('state');
const ansi = new AnsiUp();
ansi.use_classes = true;
// A log may not make links (OSC 8): none is followed from a page.
ansi.url_allowlist = {};

/** Each open container: the log itself, or a fold's body. */
const stack = [{ body: root, block: null, fill: 0, html: '', fold: null }];
let lineNo = 0;
let partial = '';
const queue = [];
let working = false;
let lastClosed = null;
let live = root.dataset.live === 'true';
let follow = live;
let lastAutoScroll = 0;
let pendingAnchor = location.hash;
let highlighted = null;
let foldCount = 0;

const top = () => stack[stack.length - 1];

function formatNs(ns) {
  const s = ns / 1e9;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** Every block of lines in line order (folds' included): {el, first, last, html, shown}. */
const blocks = [];
const observer = new IntersectionObserver(
  (entries) => {
    for (const e of entries) if (e.isIntersecting) show(e.target.block);
  },
  { rootMargin: '2000px 0px' },
);

/** Parses a block's held HTML into its element. */
function show(b) {
  if (b.shown) return;
  b.shown = true;
  observer.unobserve(b.el);
  b.el.style.height = '';
  b.el.insertAdjacentHTML('beforeend', b.html);
  b.html = '';
}

function put(b, html) {
  if (b.shown) b.el.insertAdjacentHTML('beforeend', html);
  else {
    b.html += html;
    b.el.style.height = `${(b.last - b.first + 1) * LINE_PX}px`;
  }
}

function flush() {
  for (const c of stack) {
    if (c.html) {
      put(c.block, c.html);
      c.html = '';
    }
  }
}

function addLine(content) {
  const c = top();
  if (!c.block || c.fill >= BLOCK) {
    if (c.html) {
      put(c.block, c.html);
      c.html = '';
    }
    const el = document.createElement('div');
    el.className = 'blk';
    const b = { el, first: lineNo + 1, last: lineNo, html: '', shown: blocks.length < EAGER_BLOCKS };
    el.block = b;
    blocks.push(b);
    c.body.append(el);
    if (!b.shown) observer.observe(el);
    c.block = b;
    c.fill = 0;
  }
  lineNo++;
  c.fill++;
  c.block.last = lineNo;
  // As little markup as a line can have: the rendering of a big log is mostly the parsing of this.
  c.html += `<div class="l" id="L${lineNo}"><a href="#L${lineNo}">${lineNo}</a>${content}</div>`;
  const fold = c.fold;
  if (fold && !fold.head) {
    fold.head = true;
    fold.headEl.insertAdjacentHTML('beforeend', content);
  }
}

/** The block that holds line n (blocks are in line order). */
function blockOf(n) {
  let lo = 0;
  let hi = blocks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const b = blocks[mid];
    if (n < b.first) hi = mid - 1;
    else if (n > b.last) lo = mid + 1;
    else return b;
  }
  return undefined;
}

/** Once the log has ended: the blocks not parsed yet, a slice at a time, so find-in-page sees every line. */
function showRest(from = 0) {
  const start = performance.now();
  let i = from;
  while (i < blocks.length && performance.now() - start < SLICE_MS) show(blocks[i++]);
  if (i < blocks.length) setTimeout(() => showRest(i), 30);
  else root.dataset.complete = 'true';
}

function openFold(name) {
  flush();
  const parent = top();
  parent.block = null;
  const el = document.createElement('details');
  el.className = 'fold';
  el.id = `fold-${++foldCount}`;
  el.dataset.fold = name;
  el.open = true; // running: open until it ends
  const summary = document.createElement('summary');
  const nameEl = document.createElement('span');
  nameEl.className = 'fname';
  nameEl.textContent = name;
  const headEl = document.createElement('span');
  headEl.className = 'fhead';
  const durEl = document.createElement('span');
  durEl.className = 'dur';
  summary.append(nameEl, headEl, durEl);
  const body = document.createElement('div');
  body.className = 'fbody';
  el.append(summary, body);
  parent.body.append(el);
  const fold = { el, name, headEl, durEl, head: false, failed: false };
  stack.push({ body, block: null, fill: 0, html: '', fold });
}

function closeFold(name) {
  // An end without its start (or of another fold) is shown as it is.
  const i = stack.findLastIndex((c) => c.fold && c.fold.name === name);
  if (i < 1) return false;
  flush();
  while (stack.length > i) {
    const { fold } = stack.pop();
    fold.el.open = fold.failed;
    fold.el.classList.toggle('failed', fold.failed);
    lastClosed = fold;
  }
  top().block = null;
  return true;
}

function markFailed(fold) {
  if (!fold) return;
  fold.failed = true;
  fold.el.open = true;
  fold.el.classList.add('failed');
}

// Whether ansi_up may hold a style from an earlier line (its last SGR was not a plain reset):
// while it may not, a line with no escape needs no parsing, only escaping.
let styled = false;
// biome-ignore lint/suspicious/noControlCharactersInRegex: SGR escapes
const SGR = /\x1b\[([0-9;]*)m/g;
const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' };
const escapeHtml = (t) => t.replace(/[&<>"']/g, (c) => ESCAPES[c]);

function toHtml(text) {
  if (!text.includes('\x1b')) return styled ? ansi.ansi_to_html(text) : escapeHtml(text);
  let last = null;
  for (const m of text.matchAll(SGR)) last = m[1];
  if (last !== null) styled = !(last === '' || last === '0');
  return ansi.ansi_to_html(text);
}

function processLine(line) {
  // The common line: no escape, no carriage return, no marker, no failure message.
  if (
    !styled &&
    line.indexOf('\x1b') < 0 &&
    line.indexOf('\r') < 0 &&
    !line.startsWith('travis_') &&
    line.indexOf('The command') < 0
  ) {
    addLine(escapeHtml(line));
    return;
  }
  if (line.endsWith('\r')) line = line.slice(0, -1);
  let shown = null;
  let markers = false;
  for (const seg of line.split('\r')) {
    const plain = seg.replace(ANSI, '');
    const fold = FOLD.exec(plain);
    if (fold) {
      markers = true;
      if (fold[1] === 'start') openFold(fold[2]);
      else if (!closeFold(fold[2])) shown = seg;
      continue;
    }
    const time = TIME_END.exec(plain);
    if (time) {
      markers = true;
      const f = top().fold;
      if (f) f.durEl.textContent = formatNs(Number(time[1]));
      continue;
    }
    if (TIME_START.test(plain)) {
      markers = true;
      continue;
    }
    if (plain !== '' || shown === null) shown = seg;
  }
  if (markers && (shown === null || shown.replace(ANSI, '') === '')) return;
  const text = shown ?? '';
  const plain = text.replace(ANSI, '');
  if (says(plain, FAILED_IN)) markFailed(top().fold);
  else if (says(plain, FAILED_AFTER)) markFailed(top().fold ?? lastClosed);
  addLine(toHtml(text));
}

function work() {
  const start = performance.now();
  while (queue.length > 0) {
    const text = partial + queue.shift();
    const lines = text.split('\n');
    partial = lines.pop();
    for (let i = 0; i < lines.length; i++) {
      processLine(lines[i]);
      if ((i & 127) === 127 && performance.now() - start > SLICE_MS) {
        // Hand the rest back to the queue's front, and the thread to the tab.
        // Each line left keeps its newline; the partial line after them stays partial.
        queue.unshift(lines.slice(i + 1).join('\n') + (i + 1 < lines.length ? '\n' : '') + partial);
        partial = '';
        break;
      }
    }
    if (performance.now() - start > SLICE_MS) break;
  }
  flush();
  afterRender();
  if (queue.length > 0) yieldThen();
  else {
    working = false;
    if (ended) finish();
  }
}

// A message, not setTimeout: nested timeouts are clamped to 4 ms, which would idle the renderer.
const channel = new MessageChannel();
channel.port1.onmessage = work;
const yieldThen = () => channel.port2.postMessage(null);

function push(text) {
  queue.push(text);
  if (!working) {
    working = true;
    yieldThen();
  }
}

function atBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 8;
}

function setFollow(on) {
  follow = on;
  followButton.setAttribute('aria-pressed', String(on));
  followButton.textContent = on ? 'Following' : 'Follow';
}

function afterRender() {
  if (pendingAnchor && goTo(pendingAnchor)) pendingAnchor = '';
  else if (follow && !pendingAnchor) {
    const last = blocks[blocks.length - 1];
    if (last) show(last);
    lastAutoScroll = performance.now();
    window.scrollTo(0, document.documentElement.scrollHeight);
  }
  root.dataset.lines = String(lineNo);
}

/** Scrolls to a line anchor (#L12), opening the folds around it, and highlights it. */
function goTo(hash) {
  if (!/^#L\d+$/.test(hash)) return false;
  const b = blockOf(Number(hash.slice(2)));
  if (b) show(b);
  const el = document.getElementById(hash.slice(1));
  if (!el) return false;
  for (let p = el.parentElement; p && p !== root; p = p.parentElement) {
    if (p.tagName === 'DETAILS') p.open = true;
  }
  highlighted?.classList.remove('hl');
  el.classList.add('hl');
  highlighted = el;
  setFollow(false);
  el.scrollIntoView({ block: 'center' });
  return true;
}

// While the job runs, its duration counts up (the server wrote it once).
const durationEl = document.getElementById('duration');
const clock = setInterval(() => {
  const started = Date.parse(durationEl?.dataset.started ?? '');
  if (!live || Number.isNaN(started)) return;
  durationEl.textContent = formatNs((Date.now() - started) * 1e6).replace(/\.\d+s$/, 's');
}, 1000);

let ended = null;
function finish() {
  if (partial) {
    processLine(partial);
    partial = '';
    flush();
    afterRender();
  }
  const e = ended;
  // A failed job whose failing section was not recognised: its last section opens.
  if ((e.state === 'failed' || e.state === 'errored') && lastClosed && !root.querySelector('details.failed'))
    markFailed(lastClosed);
  for (const c of stack.slice(1)) markFailed(c.fold);
  const words = [`Job ${e.state ?? 'ended'}`];
  if (e.exitCode !== null && e.exitCode !== undefined) words.push(`exit code ${e.exitCode}`);
  if (e.reason) words.push(`reason: ${e.reason}`);
  endNote.textContent = words.join(', ');
  endNote.className = `log-end s-${e.state}`;
  endNote.hidden = false;
  if (stateBadge && e.state) {
    stateBadge.textContent = e.state;
    stateBadge.className = `state s-${e.state}`;
  }
  live = false;
  clearInterval(clock);
  root.dataset.done = 'true';
  setTimeout(showRest, 100);
  if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
  setFollow(false);
}

// While the job waits, where it stands in its queue is read again every few seconds (the page's
// `place` fragment: the same line, newly made); it stops once the job is in no line (204) or its log
// has started (the line is hidden then).
const placeEl = document.getElementById('place');
async function refreshPlace() {
  if (!placeEl || placeEl.hidden) return;
  if (!document.hidden) {
    try {
      const res = await fetch(location.href, {
        headers: { 'x-archway-fragment': 'place' },
        credentials: 'same-origin',
      });
      if (res.status === 204) return;
      if (res.ok && !placeEl.hidden) placeEl.textContent = await res.text();
    } catch {
      // The server is restarting, or the network is away: the next round tries again.
    }
  }
  setTimeout(refreshPlace, Number(placeEl.dataset.refresh ?? 3000));
}
if (placeEl) setTimeout(refreshPlace, Number(placeEl.dataset.refresh ?? 3000));

const source = new EventSource(root.dataset.events);
source.addEventListener('log', (ev) => {
  // The job has started: where it stood in the queue is past.
  for (const el of document.querySelectorAll('.place')) el.hidden = true;
  push(JSON.parse(ev.data));
});
source.addEventListener('end', (ev) => {
  source.close();
  ended = JSON.parse(ev.data);
  if (!working) finish();
});
source.addEventListener('error', () => {
  // EventSource retries by itself (resuming after the last event); CLOSED means it gave up.
  if (source.readyState === EventSource.CLOSED && !ended) {
    endNote.textContent = 'The log stream was closed (the link may have expired): reload the page.';
    endNote.hidden = false;
  }
});

window.addEventListener('hashchange', () => {
  if (!goTo(location.hash)) pendingAnchor = location.hash;
});
window.addEventListener(
  'wheel',
  (e) => {
    if (e.deltaY < 0) setFollow(false);
  },
  { passive: true },
);
window.addEventListener('keydown', (e) => {
  if (['PageUp', 'ArrowUp', 'Home'].includes(e.key)) setFollow(false);
});
window.addEventListener(
  'scroll',
  () => {
    if (atBottom()) {
      if (live && !pendingAnchor && !highlighted) setFollow(true);
    } else if (performance.now() - lastAutoScroll > 300) setFollow(false);
  },
  { passive: true },
);
followButton.addEventListener('click', () => {
  setFollow(!follow);
  if (follow) {
    highlighted?.classList.remove('hl');
    highlighted = null;
    window.scrollTo(0, document.documentElement.scrollHeight);
  }
});
document.getElementById('top-link').addEventListener('click', (e) => {
  e.preventDefault();
  setFollow(false);
  window.scrollTo(0, 0);
});
