import { describe, expect, it } from 'vitest';
import { createTokenVerifier, hasScope } from '../../src/api/auth.ts';
import type { ApiToken } from '../../src/core/index.ts';

const tokens: ApiToken[] = [
  { name: 'ci', scopes: ['read', 'submit'], secret: 'ci-secret-0123456789' },
  { name: 'viewer', scopes: ['read'], secret: 'viewer-secret-0123456789' },
  { name: 'root', scopes: ['admin'], secret: 'root-secret-0123456789' },
];

describe('API tokens', () => {
  const verifier = createTokenVerifier(tokens);

  it('finds the token whose secret is presented, and no other', () => {
    expect(verifier.verify('ci-secret-0123456789')?.name).toBe('ci');
    expect(verifier.verify('viewer-secret-0123456789')?.name).toBe('viewer');
    expect(verifier.verify('root-secret-0123456789')?.name).toBe('root');
  });

  it.each([
    ['empty', ''],
    ['a prefix', 'ci-secret'],
    ['longer', 'ci-secret-0123456789x'],
    ['another case', 'CI-SECRET-0123456789'],
  ])('refuses a secret that is %s', (_what, secret) => {
    expect(verifier.verify(secret)).toBeUndefined();
  });

  it('admin implies every scope; the others hold only their own', () => {
    const [ci, viewer, root] = tokens as [ApiToken, ApiToken, ApiToken];
    expect(hasScope(ci, 'submit')).toBe(true);
    expect(hasScope(ci, 'admin')).toBe(false);
    expect(hasScope(viewer, 'read')).toBe(true);
    expect(hasScope(viewer, 'submit')).toBe(false);
    for (const s of ['read', 'submit', 'admin'] as const) expect(hasScope(root, s)).toBe(true);
  });
});
