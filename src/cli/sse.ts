export interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** Server-sent events from a response body (the parts of the format archway's API uses: id, event, data). */
export async function* parseSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let ev: { id?: string; event?: string; data: string[] } = { data: [] };
  const lines = function* (final: boolean) {
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buffer);
      // A lone \r at the very end may be the first half of \r\n.
      if (!m || (m[0] === '\r' && m.index === buffer.length - 1 && !final)) return;
      yield buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
    }
  };
  const take = function* (line: string): Generator<SseEvent> {
    if (line === '') {
      if (ev.data.length > 0 || ev.event) {
        yield {
          ...(ev.id === undefined ? {} : { id: ev.id }),
          event: ev.event ?? 'message',
          data: ev.data.join('\n'),
        };
      }
      ev = { data: [] };
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') ev.id = value;
    else if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data.push(value);
  };
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    for (const line of lines(false)) yield* take(line);
  }
  buffer += decoder.decode();
  for (const line of lines(true)) yield* take(line);
}
