import { describe, expect, it } from 'vitest';
import { parseConfig, WorkerConfig } from '../../src/core/index.ts';
import { chooseWarmTargets } from '../../workers/index.ts';

describe('chooseWarmTargets', () => {
  const held = ['busybox', 'debian-bookworm', 'debian-bookworm-build'];

  it('warms every image the node holds when none is listed, not busybox only', () => {
    expect(chooseWarmTargets({ listed: [], held, warm: 1, networks: 2, max: 8 })).toEqual({
      targets: { 'debian-bookworm-build': 1, busybox: 1, 'debian-bookworm': 1 },
      per: 1,
      cold: [],
      missing: [],
    });
  });

  it('caps the node at max warm containers, the default build image first, and says which stay cold', () => {
    // 2 per image and network mode, 2 modes: 4 containers an image; 8 fit two images.
    const r = chooseWarmTargets({ listed: [], held, warm: 2, networks: 2, max: 8 });
    expect(r.targets).toEqual({ 'debian-bookworm-build': 2, busybox: 2 });
    expect(r.cold).toEqual(['debian-bookworm']);
  });

  it('lowers the count of one image to what max allows rather than warming none', () => {
    expect(chooseWarmTargets({ listed: ['busybox'], held, warm: 10, networks: 2, max: 8 }).targets).toEqual({
      busybox: 4,
    });
  });

  it('keeps the listed order, and leaves out listed images the node does not hold', () => {
    const r = chooseWarmTargets({
      listed: ['debian-bookworm', 'nope', 'busybox'],
      held,
      warm: 1,
      networks: 1,
      max: 1,
    });
    expect(r).toEqual({ targets: { 'debian-bookworm': 1 }, per: 1, cold: ['busybox'], missing: ['nope'] });
  });

  it('warms nothing with max 0', () => {
    expect(chooseWarmTargets({ listed: [], held, warm: 1, networks: 2, max: 0 }).targets).toEqual({});
  });

  it('keeps up within the default uid ranges: 4 workers, 2 slots each, the default ARCHWAY_WARM_MAX', () => {
    const c = parseConfig(WorkerConfig, {});
    const perWorker = Object.values(
      chooseWarmTargets({
        listed: [],
        held: [...held, 'a', 'b', 'c', 'd', 'e'],
        warm: 1,
        networks: 2,
        max: c.ARCHWAY_WARM_MAX,
      }).targets,
    ).reduce((n, k) => n + k * 2, 0);
    expect(4 * (perWorker + 2)).toBeLessThanOrEqual(c.ARCHWAY_UID_RANGES);
  });
});
