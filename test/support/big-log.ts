/**
 * A log of about `bytes` bytes as a Travis build writes it: a fold of 1000 lines at a time with
 * its travis_time duration, colours here and there, lines of varied length. Returns the text and
 * how many lines the page shows for it (marker lines are not shown).
 */
export function bigLog(bytes: number): { text: string; lines: number } {
  const out: string[] = [];
  let size = 0;
  let i = 1;
  for (; size < bytes - 200; i++) {
    const l =
      i % 1000 === 1
        ? `travis_fold:start:part${i}\ntravis_time:start:${i}\n\x1b[32mpart ${i}\x1b[0m`
        : i % 1000 === 0
          ? `line ${i} \x1b[31merror-ish\x1b[0m ${'x'.repeat(40)}\ntravis_time:end:${i}:start=1,finish=2,duration=${i}000000\ntravis_fold:end:part${i - 999}`
          : `line ${i} ${'y'.repeat(i % 60)}`;
    out.push(l);
    size += Buffer.byteLength(l) + 1;
  }
  // The last fold, when it did not end on a thousand, is left open: a job still inside it.
  return { text: `${out.join('\n')}\n`, lines: i - 1 };
}
