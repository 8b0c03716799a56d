import { readFile } from 'node:fs/promises';
import { ARCH_INFO, type Arch, hostArch } from '../domain.ts';
import { HostRequirementError } from '../errors/host-requirement-error.ts';

export interface ArchSupport {
  arch: Arch;
  /** True when the arch runs through a qemu-user interpreter rather than natively. */
  emulated: boolean;
  /** The registered interpreter, when emulated. */
  interpreter?: string;
}

const FIX = (arch: Arch) =>
  `apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-${ARCH_INFO[arch].qemu} ` +
  '(or run ops/setup-host.sh)';

/**
 * How this host runs `arch`: natively, or through a qemu-user interpreter registered with
 * binfmt_misc. The F (fix binary) flag is required: it makes the kernel open the interpreter when
 * the entry is registered, so it works inside containers whose root lacks the interpreter.
 */
export async function archSupport(arch: Arch, procRoot = '/proc'): Promise<ArchSupport> {
  if (hostArch() === arch) return { arch, emulated: false };
  const entry = `${procRoot}/sys/fs/binfmt_misc/qemu-${ARCH_INFO[arch].qemu}`;
  let text: string;
  try {
    text = await readFile(entry, 'utf8');
  } catch {
    throw new HostRequirementError(
      `${arch} needs qemu-user emulation on this ${hostArch() ?? process.arch} host, but ${entry} is not registered`,
      FIX(arch),
    );
  }
  const enabled = text.startsWith('enabled');
  const flags = text.match(/^flags: (\S*)/m)?.[1] ?? '';
  const interpreter = text.match(/^interpreter (\S+)/m)?.[1];
  if (!enabled || !flags.includes('F')) {
    throw new HostRequirementError(
      `${arch} emulation: ${entry} is ${enabled ? `registered without the F flag (flags: ${flags || 'none'})` : 'disabled'}`,
      FIX(arch),
    );
  }
  return interpreter ? { arch, emulated: true, interpreter } : { arch, emulated: true };
}
