import type { NodeInfo } from '../../queue/index.ts';
import type { Arch } from '../../src/core/index.ts';

/**
 * What a node registers with (`NodeRegistry.register`), for a test that needs a node in the
 * registry without a worker behind it: active, idle, emulated unless its arch is the host's.
 */
export function testNode(
  id: string,
  arch: Arch,
  o: Partial<Pick<NodeInfo, 'hostArch' | 'emulated' | 'slots' | 'busy'>> = {},
): Omit<NodeInfo, 'lastSeen' | 'lost' | 'silentMs' | 'drainRequested' | 'quarantineReason' | 'images'> {
  return {
    id,
    arch,
    hostArch: o.hostArch ?? 'amd64',
    emulated: o.emulated ?? arch !== 'amd64',
    slots: o.slots ?? 2,
    busy: o.busy ?? 0,
    state: 'active',
    version: 'test',
    startedAt: new Date().toISOString(),
  };
}
