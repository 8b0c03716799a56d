import { FINAL_STATES, type JobRecord, placeText, type QueuePlaceView, waitText } from '../../core/index.ts';
import { formatTime, jobDuration } from './format.ts';
import { html } from './html.ts';
import { layout } from './layout.ts';

export interface JobPageOptions {
  /** The job as a non-admin sees it (secrets masked, a private repository's source left out). */
  job: JobRecord;
  /** `?exp=..&sig=..` that the page's own requests carry (the log's events, the raw log); '' with a login or public logs. */
  auth: string;
  /** Signed link to the job's build page, when the job belongs to one. */
  buildHref?: string | undefined;
  user?: string | undefined;
  /** Where the job stands in its arch's queue, when it is queued (`GET /v1/jobs/:id`'s `queue`). */
  place?: QueuePlaceView | undefined;
}

/** Where a queued job stands, with its estimated wait and the time it was read; '' when it is in no line. */
export function placeLine(j: JobRecord, place: QueuePlaceView | undefined, now = new Date()): string {
  const words = placeText(j, place);
  const wait =
    place?.status === 'waiting' ? `, ${waitText(place.estimatedWaitSeconds, place.estimate.note)}` : '';
  return (words ?? '') && `${words}${wait}; as of ${now.toISOString().slice(11, 19)} UTC`;
}

/** A job's page: its facts, then its log, which `assets/log.js` renders and follows. */
export function jobPage(o: JobPageOptions): string {
  const j = o.job;
  const id = encodeURIComponent(j.id);
  const q = o.auth ? `?${o.auth}` : '';
  const live = !FINAL_STATES.includes(j.state);
  const repo = j.labels.repo;
  const ref = j.labels.branch ?? j.spec.source?.ref;
  const sha = j.labels.sha ?? j.spec.source?.sha;
  // As the page opened; `log.js` asks for it again every few seconds while the job waits
  // (placeLine, the `place` fragment of this page) and hides it once the job's log starts.
  const place = placeLine(j, o.place);
  const body = html`<main class="job">
<h1>Job <code>${j.id}</code> <span id="state" class="state s-${j.state}">${j.state}</span></h1>
<dl class="facts">
${repo ? html`<dt>Repository</dt><dd>${repo}</dd>` : ''}
${ref ? html`<dt>Branch</dt><dd>${ref}</dd>` : ''}
${sha ? html`<dt>Commit</dt><dd><code>${sha.slice(0, 12)}</code></dd>` : ''}
${o.buildHref ? html`<dt>Build</dt><dd><a href="${o.buildHref}">${j.labels.build_number ? `#${j.labels.build_number}` : j.labels.build}</a>${j.labels.stage ? html` · stage ${j.labels.stage}` : ''}</dd>` : ''}
<dt>Arch</dt><dd>${j.arch}</dd>
<dt>Image</dt><dd><code>${j.image}</code></dd>
${j.node ? html`<dt>Node</dt><dd>${j.node}</dd>` : ''}
${place ? html`<dt class="place">Queue</dt><dd id="place" class="place" data-refresh="3000">${place}</dd>` : ''}
<dt>Created</dt><dd>${formatTime(j.createdAt)}</dd>
<dt>Duration</dt><dd id="duration" data-started="${live ? (j.startedAt ?? '') : ''}">${jobDuration(j)}</dd>
${j.attempt > 1 ? html`<dt>Attempt</dt><dd>${j.attempt}</dd>` : ''}
</dl>
<nav class="tools"><a id="raw" href="/jobs/${id}/raw${q}">Raw log</a>
<button type="button" id="follow" aria-pressed="${live}">${live ? 'Following' : 'Follow'}</button>
<a href="#" id="top-link">Top</a></nav>
<div id="log" class="log" data-events="/jobs/${id}/events${q}" data-live="${live}" aria-live="off"></div>
<p id="log-end" class="log-end" hidden></p>
</main>`;
  return layout({ title: `Job ${j.id}`, body, scripts: ['log.js'], user: o.user });
}
