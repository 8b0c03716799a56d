import { describe, expect, it } from 'vitest';
import {
  BLOCKED_V4,
  blockAddresses,
  blocksIn,
  egressRuleset,
  parseCidr,
} from '../../workers/egress-network.ts';

describe('job network addresses', () => {
  it('parses a CIDR to its network and refuses what is not one, naming it', () => {
    expect(parseCidr('10.89.3.7/16')).toEqual({ base: (10 * 256 + 89) * 65536, prefix: 16 });
    expect(() => parseCidr('10.89.0.0', 'ARCHWAY_EGRESS_SUBNET')).toThrow(
      /ARCHWAY_EGRESS_SUBNET '10.89.0.0'/,
    );
    expect(() => parseCidr('300.1.1.1/8')).toThrow(/not an IPv4 CIDR/);
  });
  it('gives each container a /30 of its own after the service block', () => {
    const s = parseCidr('10.89.0.0/16');
    expect(blockAddresses(s, 1)).toEqual({
      network: '10.89.0.4',
      gateway: '10.89.0.5',
      address: '10.89.0.6',
    });
    expect(blockAddresses(s, 64)).toEqual({
      network: '10.89.1.0',
      gateway: '10.89.1.1',
      address: '10.89.1.2',
    });
    expect(blocksIn(s)).toBe(16383);
  });
});

describe('the egress ruleset', () => {
  const rules = egressRuleset({
    subnet: '10.89.0.0/16',
    service: '10.89.0.1',
    allow: ['10.20.0.0/24'],
    hostSubnets: ['192.0.2.0/24'],
  });
  it('replaces its own table as a whole (idempotent) and touches no other', () => {
    expect(rules.startsWith('add table inet archway\ndelete table inet archway\ntable inet archway {')).toBe(
      true,
    );
    expect(rules).not.toMatch(/flush ruleset/);
  });
  it('lets jobs reach only DNS and the package cache on the host', () => {
    const fromJobs = rules.slice(rules.indexOf('chain from_jobs'), rules.indexOf('chain forward'));
    expect(fromJobs).toContain('ip daddr 10.89.0.1 udp dport 53 accept');
    expect(fromJobs).toContain('ip daddr 10.89.0.1 tcp dport { 53, 3142 } accept');
    expect(fromJobs).toMatch(/reject with icmpx admin-prohibited\n/);
  });
  it('refuses other jobs, then allows the operator list, then refuses private, link-local and the LAN', () => {
    const egress = rules.slice(rules.indexOf('chain egress'), rules.indexOf('chain refuse'));
    const order = [
      'ip daddr 10.89.0.0/16 jump refuse',
      'ip daddr @allow4 accept',
      'ip daddr @blocked4 jump refuse',
      'accept',
    ];
    let at = -1;
    for (const rule of order) {
      const i = egress.indexOf(rule, at + 1);
      expect(i, rule).toBeGreaterThan(at);
      at = i;
    }
    for (const net of [...BLOCKED_V4, '192.0.2.0/24']) expect(rules).toContain(net);
    expect(BLOCKED_V4).toEqual(
      expect.arrayContaining([
        '169.254.0.0/16',
        '10.0.0.0/8',
        '172.16.0.0/12',
        '192.168.0.0/16',
        '100.64.0.0/10',
        '127.0.0.0/8',
      ]),
    );
    expect(egress).toContain('meta nfproto ipv6 reject');
  });
  it('has no allow set when the operator allows nothing', () => {
    const none = egressRuleset({ subnet: '10.89.0.0/16', service: '10.89.0.1', allow: [], hostSubnets: [] });
    expect(none).not.toContain('allow4');
  });
});
