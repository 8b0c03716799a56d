/**
 * A listener that could not bind, as an error naming the setting that chose its address, so that
 * the operator knows what to change (Node's own text, "listen EADDRINUSE: address already in use
 * :::9100", names neither the setting nor the component).
 */
export function listenError(err: unknown, setting: string, where: string): Error {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const why =
    code === 'EADDRINUSE'
      ? 'is in use by another process'
      : code === 'EACCES'
        ? 'may not be bound by this user'
        : code === 'EADDRNOTAVAIL'
          ? 'is not an address of this host'
          : `cannot be bound (${err instanceof Error ? err.message : String(err)})`;
  return new Error(`${setting}: ${where} ${why}; choose another with ${setting}`, { cause: err });
}
