import { describe, expect, it } from 'vitest';
import type { NodeInfo } from '../../queue/index.ts';
import { formatDuration } from '../../src/api/pages/format.ts';
import { html } from '../../src/api/pages/html.ts';
import { nodeState } from '../../src/api/pages/pools-page.ts';

const node = (o: Partial<NodeInfo>): NodeInfo => ({
  id: 'n1',
  arch: 'arm64',
  hostArch: 'x64',
  emulated: true,
  slots: 2,
  busy: 0,
  state: 'active',
  drainRequested: false,
  version: 'v',
  startedAt: '',
  lastSeen: 0,
  lost: false,
  silentMs: 0,
  images: [],
  ...o,
});

describe('the pages', () => {
  it('name a node lost first, then draining (asked or doing it), then quarantined or active', () => {
    expect(nodeState(node({}))).toBe('active');
    expect(nodeState(node({ drainRequested: true }))).toBe('draining');
    expect(nodeState(node({ state: 'draining' }))).toBe('draining');
    expect(nodeState(node({ state: 'quarantined' }))).toBe('quarantined');
    expect(nodeState(node({ state: 'quarantined', drainRequested: true }))).toBe('draining');
    expect(nodeState(node({ lost: true, drainRequested: true }))).toBe('lost');
  });

  it('escape every value they interpolate, and only those', () => {
    const name = `<script>alert("x")</script>' & "`;
    const inner = html`<b>${name}</b>`;
    expect(html`<p title="${name}">${inner}${[name, 1]}${undefined}${false}</p>`.value).toBe(
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; &amp; &quot;">' +
        '<b>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; &amp; &quot;</b>' +
        '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; &amp; &quot;1</p>',
    );
  });

  it('write durations for people', () => {
    expect(formatDuration(4200)).toBe('4.2s');
    expect(formatDuration(42_000)).toBe('42s');
    expect(formatDuration(185_000)).toBe('3m 05s');
    expect(formatDuration(3_725_000)).toBe('1h 02m');
    expect(formatDuration(-1)).toBe('');
  });
});
