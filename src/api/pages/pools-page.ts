import type { NodeInfo, PoolStatus } from '../../../queue/index.ts';
import { formatDuration, formatTime } from './format.ts';
import { html, type SafeHtml } from './html.ts';
import { layout } from './layout.ts';

/** The one word for a node's state on the page: lost, draining, quarantined or active. */
export function nodeState(n: NodeInfo): 'lost' | 'draining' | 'quarantined' | 'active' {
  if (n.lost) return 'lost';
  if (n.drainRequested || n.state === 'draining') return 'draining';
  return n.state;
}

const seconds = (ms: number | undefined) => (ms === undefined ? '-' : formatDuration(ms));

function pool(s: PoolStatus): SafeHtml {
  const p = s.pool;
  const nodes = s.nodes.map(
    (n) => html`<tr class="node" data-node="${n.id}" data-state="${nodeState(n)}">
<td><code>${n.id}</code></td>
<td><span class="state n-${nodeState(n)}">${nodeState(n)}</span>${n.quarantineReason ? html` <small>${n.quarantineReason}</small>` : ''}</td>
<td>${n.busy} / ${n.slots}</td>
<td>${n.emulated ? `emulated on ${n.hostArch}` : n.hostArch}</td>
<td>${n.version}</td>
<td>${formatTime(new Date(n.lastSeen).toISOString())}</td>
<td>${n.images.length ? n.images.map((i) => html`<code title="${i.digest}">${i.name}@${i.digest.replace(/^sha256:/, '').slice(0, 12)}</code>${i.current ? '' : html` <small>(old)</small>`} `) : html`<small>none reported</small>`}</td>
</tr>`,
  );
  return html`<section class="pool" id="pool-${p.arch}">
<h2>${p.arch}</h2>
<dl class="facts">
<dt>Nodes</dt><dd>${s.healthyNodes} healthy of ${s.nodes.length} (min ${p.min}, max ${p.max}${p.desired === undefined ? '' : `, desired ${p.desired}`})</dd>
<dt>Slots</dt><dd>${s.totalSlots - s.freeSlots} busy, ${s.freeSlots} free</dd>
<dt>Queue</dt><dd class="queue-depth">${s.waiting} waiting${s.held ? ` (and ${s.held} held by a concurrency cap)` : ''}</dd>
<dt>Oldest wait</dt><dd>${seconds(s.oldestWaitingMs)}</dd>
<dt>Estimated wait</dt><dd>${s.estimate.seconds === null ? 'unknown' : formatDuration(s.estimate.seconds * 1000)} <small>${s.estimate.note}</small></dd>
</dl>
${nodes.length ? html`<table class="nodes"><thead><tr><th>Node</th><th>State</th><th>Busy / slots</th><th>Host</th><th>Version</th><th>Last seen</th><th>Images</th></tr></thead><tbody>${nodes}</tbody></table>` : html`<p class="empty">No node.</p>`}
</section>`;
}

export function poolsMain(statuses: readonly PoolStatus[]): SafeHtml {
  return html`<main id="live" data-refresh="3000"><h1>Pools</h1>${statuses.map(pool)}</main>`;
}

export function poolsPage(statuses: readonly PoolStatus[], user?: string): string {
  return layout({ title: 'Pools', body: poolsMain(statuses), scripts: ['live.js'], user });
}
