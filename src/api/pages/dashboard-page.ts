import { ARCHES, type Arch, JOB_STATES, type JobRecord, type JobState } from '../../core/index.ts';
import type { PageBuild } from './build-page.ts';
import { formatDuration, formatTime, jobDuration } from './format.ts';
import { html, type SafeHtml } from './html.ts';
import { layout } from './layout.ts';

export interface DashboardOptions {
  /** Recent builds, newest first. */
  builds: readonly PageBuild[];
  /** Newest first, as a non-admin sees them. */
  jobs: readonly JobRecord[];
  filter: { state?: JobState | undefined; arch?: Arch | undefined };
  user?: string | undefined;
}

const updated = (j: JobRecord) => j.finishedAt ?? j.startedAt ?? j.createdAt;

function select(name: string, values: readonly string[], chosen: string | undefined): SafeHtml {
  return html`<select name="${name}"><option value="">any ${name}</option>${values.map(
    (v) => html`<option value="${v}"${chosen === v ? html` selected` : ''}>${v}</option>`,
  )}</select>`;
}

/** The main part of `/`: what `assets/live.js` swaps in every few seconds. */
export function dashboardMain(o: DashboardOptions): SafeHtml {
  const rows = o.jobs.map(
    (j) => html`<tr class="job-row" data-state="${j.state}" data-arch="${j.arch}">
<td><a href="/jobs/${encodeURIComponent(j.id)}"><code>${j.id}</code></a></td>
<td>${j.labels.repo ?? ''}</td>
<td>${j.labels.branch ?? j.spec.source?.ref ?? ''}</td>
<td>${j.labels.build ? html`<a href="/builds/${encodeURIComponent(j.labels.build)}">${j.labels.build_number ? `#${j.labels.build_number}` : j.labels.build}</a>` : ''}${j.labels.job_number ? html` · ${j.labels.job_number}` : ''}</td>
<td>${j.arch}</td>
<td><span class="state s-${j.state}">${j.state}</span>${j.reason ? html` <small>${j.reason}</small>` : ''}</td>
<td>${jobDuration(j)}</td>
<td>${formatTime(updated(j))}</td>
</tr>`,
  );
  const builds = o.builds.map(
    (b) => html`<tr class="build-row" data-state="${b.state}">
<td><a href="/builds/${encodeURIComponent(b.id)}">#${b.number}</a></td>
<td>${b.repo}</td>
<td>${b.ref.replace(/^refs\/(heads|tags)\//, '')}</td>
<td>${b.slots.length} job${b.slots.length === 1 ? '' : 's'}</td>
<td>${[...new Set(b.slots.map((sl) => sl.job.arch).filter(Boolean))].join(', ')}</td>
<td><span class="state s-${b.state}">${b.state}</span></td>
<td>${b.finishedAt ? formatDuration(Date.parse(b.finishedAt) - Date.parse(b.createdAt)) : ''}</td>
<td>${formatTime(b.finishedAt ?? b.createdAt)}</td>
</tr>`,
  );
  return html`<main id="live" data-refresh="3000">
<h1>Builds and jobs</h1>
<form method="get" action="/" class="filters">${select('state', JOB_STATES, o.filter.state)} ${select('arch', ARCHES, o.filter.arch)} <button type="submit">Filter</button></form>
<h2>Builds</h2>
<table class="builds"><thead><tr><th>Build</th><th>Repository</th><th>Ref</th><th>Jobs</th><th>Arches</th><th>State</th><th>Duration</th><th>Updated</th></tr></thead>
<tbody>${builds.length ? builds : html`<tr><td colspan="8" class="empty">No build${o.filter.state || o.filter.arch ? ' matches' : ' yet'}.</td></tr>`}</tbody></table>
<h2>Jobs</h2>
<table class="jobs"><thead><tr><th>Job</th><th>Repository</th><th>Branch</th><th>Build</th><th>Arch</th><th>State</th><th>Duration</th><th>Updated</th></tr></thead>
<tbody>${rows.length ? rows : html`<tr><td colspan="8" class="empty">No job${o.filter.state || o.filter.arch ? ' matches' : ' yet'}.</td></tr>`}</tbody></table>
</main>`;
}

export function dashboardPage(o: DashboardOptions): string {
  return layout({ title: 'Builds and jobs', body: dashboardMain(o), scripts: ['live.js'], user: o.user });
}
